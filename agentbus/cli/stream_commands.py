"""`publish` and `record`: moving recordings on and off the exchange."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentbus.cli.common import (
    application,
    broker_transport,
    codec,
    err,
    fail,
    run_async,
    settings,
    system_of,
)
from agentbus.recording import (
    RecordingError,
    RecordSummary,
    publish_recording,
    record,
    scan_recording,
)
from agentbus.telemetry import configure_tracing, shutdown_tracing

AmqpUrl = Annotated[str | None, typer.Option("--amqp-url", help="Overrides AMQP_URL.")]


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("record")(record_command)


def publish(
    file: Annotated[Path, typer.Argument(help="A JSONL file: one CloudEvent per line.")],
    amqp_url: AmqpUrl = None,
) -> None:
    """Publish recorded events, unchanged, with confirms. The whole file is checked first;
    skipped entries (messages that were not events) are passed over."""
    config = settings()
    app = application()
    try:
        recording = scan_recording(file, codec(app))
    except RecordingError as exc:
        fail(str(exc))
    events = recording.events
    system = system_of(config, amqp_url, app, name="agentbus publish")
    configure_tracing("agentbus-publish")

    async def go() -> int:
        await system.open()
        bus = system.bus
        try:
            with Progress(
                TextColumn("publishing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            ) as progress:
                task = progress.add_task("publish", total=len(events))
                return await publish_recording(
                    bus, events, progress=lambda n: progress.advance(task, n)
                )
        finally:
            await system.close()
            shutdown_tracing()

    count = run_async(go)
    passed = len(recording.skipped)
    note = f" ({passed} skipped entr{'y' if passed == 1 else 'ies'} passed over)" if passed else ""
    typer.echo(f"published {count} event(s) from {file}{note}", err=True)


def record_command(
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write ('-' for stdout).")],
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many events.")
    ] = None,
    pattern: Annotated[str, typer.Option("--pattern", help="Routing-key pattern.")] = "#",
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Read a durable queue of this name (AGENTBUS_QUEUE_KIND, quorum by default) "
            "and append to --out: what is published while no recorder runs waits there, "
            "so a recorder started again loses nothing.",
        ),
    ] = None,
    amqp_url: AmqpUrl = None,
) -> None:
    """Record every event on the exchange until SIGINT/SIGTERM (or --count events).

    Binary-mode events are written in structured form; a message that is no event of the
    catalog is written as a skipped entry with its reason, which `publish` passes over.
    A message is acknowledged only once its line is on disk (fsync), so a recorder killed
    at any moment loses nothing it was given; with --queue, nothing published meanwhile
    either. A line written but not yet acknowledged comes again: the file may hold an
    event twice, under one id, which `publish` and `rebuild` treat as the duplicate it is.
    """
    config = settings()
    app = application()
    transport = broker_transport(config, amqp_url, name="agentbus record", event_types=app.catalog)
    if str(out) == "-":
        handle = sys.stdout.buffer
    else:
        try:
            # A durable queue resumes where the last recorder stopped: keep its lines.
            handle = out.open("ab" if queue is not None else "wb")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")

    async def go() -> RecordSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await transport.start()
        # A live count on a terminal; nothing extra in a pipe or a log.
        live = Live(console=err, transient=True, auto_refresh=False)
        showing = err.is_terminal

        def show(summary: RecordSummary) -> None:
            if showing:
                live.update(_status(summary), refresh=True)

        try:
            with live if showing else contextlib.nullcontext():
                return await record(
                    transport,
                    codec(app),
                    handle,
                    stop=stop,
                    pattern=pattern,
                    limit=count,
                    queue=queue,
                    queue_kind=config.consumer.queue_kind,
                    on_message=show,
                    on_ready=lambda _: err.print(
                        f"recording {pattern!r} on {transport.exchange}; Ctrl-C to stop",
                        highlight=False,
                    ),
                )
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
            await transport.close()

    try:
        summary = run_async(go)
    finally:
        if handle is not sys.stdout.buffer:
            handle.close()
    typer.echo(f"recorded {summary.written} event(s) to {out}{_skips(summary)}", err=True)


def _status(summary: RecordSummary) -> str:
    return f"recorded {summary.written} event(s){_skips(summary)}"


def _skips(summary: RecordSummary) -> str:
    total = sum(summary.skipped.values())
    if not total:
        return ""
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary.skipped.most_common())
    return f"; skipped {total} message(s) that were no events ({reasons})"
