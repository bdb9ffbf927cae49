"""`suggestions`: what the agents suggested, and what became of it."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from agentbus.cli.common import application, codec, print_json, run_async, settings
from agentbus.store import open_database


def register(app: typer.Typer) -> None:
    app.command("suggestions")(suggestions)


def suggestions(
    status: Annotated[
        str | None, typer.Option("--status", help="Only pending, approved or rejected.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every suggestion of every agent, newest first, with its review status."""
    config = settings()
    app = application()

    async def go() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for view in app.suggestions:
            database = open_database(
                view.service,
                codec(app),
                url=config.database_url,
                data_dir=config.data_dir,
                outage_limit=0,
            )

            def read(connection: sa.Connection, view: Any = view) -> Any:
                try:
                    return view.read(connection)
                except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                    return []  # that agent has not run here yet

            try:
                found.extend({"agent": view.service, **row} for row in await database.read(read))
            finally:
                await database.close()
        found.sort(key=lambda row: row.get("created_at") or "", reverse=True)
        return [row for row in found if status is None or row["status"] == status]

    rows = run_async(go)
    if as_json:
        print_json(rows)
        return
    table = Table("agent", "subject", "status", "quantity", "urgency", "model", "trace id")
    for row in rows:
        data = row["data"]
        table.add_row(
            row["agent"],
            row["subject"],
            row["status"],
            str(data.get("quantity", "")),
            str(data.get("urgency", "")),
            str(data.get("model", "")),
            row.get("trace_id") or "",
        )
    Console().print(table if rows else "no suggestions yet")
