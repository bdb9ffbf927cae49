"""`new-agent NAME`: scaffold an agent with its prompt, a tool, a test and an eval case."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentbus.cli.common import application, err, fail
from agentbus.errors import ConfigurationError
from agentbus.scaffold import scaffold


def register(app: typer.Typer) -> None:
    app.command("new-agent")(new_agent)


def new_agent(
    name: Annotated[str, typer.Argument(help="The agent's name, e.g. slow-mover.")],
    trigger: Annotated[
        str | None,
        typer.Option("--trigger", help="The event type that starts a run (default: the first)."),
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="The project root.")] = Path("."),
) -> None:
    """Write a working agent, its prompt, a tool, a test and an eval case."""
    app = application()
    chosen = trigger or next(iter(app.catalog), None)
    if chosen is None:
        fail("the application's catalog is empty")
    try:
        written = scaffold(root, name, chosen, app.catalog)
    except ConfigurationError as exc:
        fail(str(exc))
    pkg = name.replace("-", "_")
    for path in written:
        typer.echo(str(path))
    err.print(
        f"{name} runs on {chosen}. Next: uv run pytest tests/agents/test_{pkg}.py; then add "
        f"agents/{pkg}/suggestion.py's model to the catalog and agent_service(declaration()) "
        "to the application's services (docs/agents.md).",
        highlight=False,
    )
