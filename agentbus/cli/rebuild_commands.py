"""`rebuild SERVICE FILE.jsonl [--check]`: a service's state from a recording."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from agentbus.cli.common import application, codec, fail, print_json, run_async, settings
from agentbus.envelope import EventCodec
from agentbus.rebuild import Rebuilt, rebuild, rebuild_settings
from agentbus.recording import RecordingError, read_recording
from agentbus.settings import Settings
from agentbus.statediff import State, differences, read_state_rows
from agentbus.store import Database, open_database
from agentbus.store.database import sqlite_path


def register(app: typer.Typer) -> None:
    app.command("rebuild")(rebuild_command)


def rebuild_command(
    service: Annotated[str, typer.Argument(help="The service whose state to rebuild.")],
    file: Annotated[Path, typer.Argument(help="A recording (agentbus record): JSONL events.")],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Compare with the live database (DATABASE_URL or AGENTBUS_DATA); "
            "exit 1 on any difference.",
        ),
    ] = False,
    into: Annotated[
        Path | None,
        typer.Option(
            "--into",
            help="An empty folder for the rebuilt SQLite database (default: a new "
            "temporary one, kept unless --check).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rebuild a service's state from a recording, with the service's own handlers, in a
    fresh database; with --check, print every difference from the live one."""
    config = settings()
    app = application()
    if service not in app.services:
        fail(f"unknown service {service!r} (known: {', '.join(sorted(app.services))})")
    events_codec = codec(app)
    try:
        events = [recorded.event for recorded in read_recording(file, events_codec)]
    except RecordingError as exc:
        fail(str(exc))
    built = app.service(service)
    if not built.rebuildable:
        fail(
            f"{service} cannot be rebuilt: its state does not come from its events alone, "
            "or it acts outside its database"
        )
    live = _live_database(service, events_codec, config) if check else None
    target = _fresh_folder(into)

    async def go() -> tuple[Rebuilt, list[str] | None]:
        try:
            done = await rebuild(
                built, events, events_codec, rebuild_settings(config, target / "data")
            )
            if live is None:
                return done, None
            rebuilt = open_database(
                service, events_codec, url=None, data_dir=done.data_dir, outage_limit=0
            )
            try:
                return done, differences(await _rows(rebuilt), await _rows(live))
            finally:
                await rebuilt.close()
        finally:
            if live is not None:
                await live.close()

    try:
        done, found = run_async(go)
    finally:
        if check and into is None:
            shutil.rmtree(target, ignore_errors=True)
    _report(done, found, as_json, kept=not check or into is not None)
    if found:
        raise typer.Exit(1)


def _fresh_folder(into: Path | None) -> Path:
    if into is None:
        return Path(tempfile.mkdtemp(prefix="agentbus-rebuild-"))
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        fail(f"{into} is not an empty folder: a rebuild starts from a fresh database")
    into.mkdir(parents=True, exist_ok=True)
    return into


def _live_database(service: str, events_codec: EventCodec, config: Settings) -> Database:
    if not config.database_url and not sqlite_path(service, config.data_dir).is_file():
        where = sqlite_path(service, config.data_dir)
        fail(f"no live database of {service} at {where} (set AGENTBUS_DATA or DATABASE_URL)")
    return open_database(
        service,
        events_codec,
        url=config.database_url,
        data_dir=config.data_dir,
        outage_limit=0,
    )


async def _rows(database: Database) -> State:
    schema = database.schema

    def read(connection: sa.Connection) -> State:
        if schema is not None and schema not in sa.inspect(connection).get_schema_names():
            fail(f"no live database of the service: schema {schema!r} does not exist")
        return read_state_rows(connection, schema)

    return await database.read(read)


def _report(done: Rebuilt, found: list[str] | None, as_json: bool, *, kept: bool) -> None:
    summary: dict[str, Any] = {
        "service": done.service,
        "events": done.fed,
        "dead_letters": done.dead_letters,
        "database": str(done.data_dir) if kept else None,
    }
    if found is not None:
        summary["equal"] = not found
        summary["differences"] = found
    if as_json:
        print_json(summary)
        return
    refused = f", {done.dead_letters} refused" if done.dead_letters else ""
    line = f"{done.service}: rebuilt from {done.fed} events{refused}"
    if kept:
        line += f" into {done.data_dir}"
    typer.echo(line)
    if found is None:
        return
    for difference in found:
        typer.echo(difference)
    typer.echo(
        f"{len(found)} difference(s) from the live state" if found else "equal to the live state"
    )
