"""Entry point: builds the command tree from the command modules."""

from __future__ import annotations

import logging

import typer

from agentbus.cli import (
    catalog_commands,
    dlq_commands,
    eval_commands,
    explain_commands,
    rebuild_commands,
    run_commands,
    scaffold_commands,
    state_commands,
    stream_commands,
    suggestion_commands,
)
from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError

app = typer.Typer(
    name="agentbus",
    help="Deterministic consumers and AI agents on one traced event bus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_commands.register(app)
stream_commands.register(app)
catalog_commands.register(app)
state_commands.register(app)
suggestion_commands.register(app)
eval_commands.register(app)
explain_commands.register(app)
scaffold_commands.register(app)
rebuild_commands.register(app)
app.add_typer(dlq_commands.app, name="dlq")


def main() -> None:
    logging.basicConfig(
        level=_log_level(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiormq logs each failed connect at ERROR; the CLI reports it once, itself.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    app()


def _log_level() -> str:
    try:
        return load_environment().log_level.upper()
    except ConfigurationError:
        return "WARNING"  # the command that needs the bad variable says what is wrong
