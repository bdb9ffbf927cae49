"""`schema` and `asyncapi`: documents generated from the catalog and the services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agentbus.asyncapi import amqp_servers, build_asyncapi
from agentbus.cli.common import application, fail, settings
from agentbus.errors import ConfigurationError
from agentbus.jsonschema import write_schemas


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
    app.command("asyncapi")(asyncapi)


def schema(
    out: Annotated[Path, typer.Option("--out", help="Directory for one JSON Schema per type.")],
) -> None:
    """Write a JSON Schema for the data of every event type."""
    app = application()
    try:
        written = write_schemas(app.catalog, out)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    typer.echo(f"wrote {len(written)} schemas to {out}", err=True)


def asyncapi(
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write; standard output if omitted.")
    ] = None,
) -> None:
    """Write the AsyncAPI 3.0 document of the exchange, its events and services; its servers
    are the configured brokers (AMQP_URL, one per node of a cluster)."""
    app = application()
    config = settings()
    services = app.resolve(["all"])
    try:
        servers = amqp_servers(config.amqp_url) if config.amqp_url else []
    except ConfigurationError as exc:
        fail(str(exc))
    document = build_asyncapi(app.catalog, services, exchange=config.exchange, servers=servers)
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"wrote {out}", err=True)
