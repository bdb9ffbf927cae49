"""`state NAME`: what a service's database holds, read-only."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from agentbus.cli.common import application, codec, fail, print_json, run_async, settings
from agentbus.store import open_database


def register(app: typer.Typer) -> None:
    app.command("state")(state)


def state(
    name: Annotated[str, typer.Argument(help="Which state: e.g. inventory, orders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a service's state as its database holds it."""
    config = settings()
    app = application()
    view = app.states.get(name)
    if view is None:
        fail(f"unknown state {name!r} (known: {', '.join(sorted(app.states)) or 'none'})")
    database = open_database(
        view.service,
        codec(app),
        url=config.database_url,
        data_dir=config.data_dir,
        outage_limit=0,
    )

    def read(connection: sa.Connection) -> Any:
        try:
            return view.read(connection)
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return {}  # the service has not run here yet: nothing to show

    async def go() -> Any:
        try:
            return await database.read(read)
        finally:
            await database.close()

    value = run_async(go)
    if as_json:
        print_json(value)
        return
    Console().print(_table(name, value))


def _table(name: str, value: Any) -> Table | str:
    if not isinstance(value, dict) or not value:
        return f"{name}: empty"
    first = next(iter(value.values()))
    columns = list(first) if isinstance(first, dict) else ["value"]
    table = Table("key", *columns, title=name)
    for key, row in value.items():
        cells = [str(row.get(c, "")) for c in columns] if isinstance(row, dict) else [str(row)]
        table.add_row(str(key), *cells)
    return table
