"""`dlq list` and `dlq redrive`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentbus.cli.common import (
    application,
    broker_transport,
    fail,
    print_json,
    run_async,
    settings,
)
from agentbus.deadletters import DeadLetter, list_dead_letters, redrive

app = typer.Typer(help="Inspect and redrive dead letters.", no_args_is_help=True)

AmqpUrl = Annotated[str | None, typer.Option("--amqp-url", help="Overrides AMQP_URL.")]


@app.command("list")
def list_command(
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Consumer queue(s); default: all.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    amqp_url: AmqpUrl = None,
) -> None:
    """List dead letters: queue, event id, error code, detail, attempts."""
    config = settings()
    queues = queue or [service.queue for service in application().resolve(["all"])]
    transport = broker_transport(config, amqp_url, name="agentbus dlq list")

    async def go() -> list[DeadLetter]:
        await transport.start()
        try:
            return await list_dead_letters(transport, queues)
        finally:
            await transport.close()

    letters = run_async(go)
    if as_json:
        print_json([letter.to_json() for letter in letters])
        return
    table = Table("queue", "event id", "type", "error", "detail", "attempts")
    for letter in letters:
        table.add_row(
            letter.queue,
            letter.event_id or "-",
            letter.type or "-",
            letter.error_code,
            letter.detail,
            str(letter.attempts),
        )
    Console().print(table if letters else "no dead letters")


@app.command("redrive")
def redrive_command(
    queue: Annotated[str, typer.Argument(help="The consumer queue whose dead letters to resend.")],
    amqp_url: AmqpUrl = None,
) -> None:
    """Send a queue's dead letters back to it for another try."""
    config = settings()
    transport = broker_transport(config, amqp_url, name="agentbus dlq redrive")

    async def go() -> int:
        await transport.start()
        try:
            return await redrive(transport, queue)
        except KeyError:
            fail(f"no dead-letter queue for {queue!r}")
        finally:
            await transport.close()

    moved = run_async(go)
    typer.echo(f"redrove {moved} message(s) to {queue}")
