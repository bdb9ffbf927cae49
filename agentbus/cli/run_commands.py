"""`run` (services as queue consumers) and `demo` (the whole system in one process)."""

from __future__ import annotations

from typing import Annotated

import typer

from agentbus.app import DemoOptions, demo_of
from agentbus.cli.common import (
    application,
    environment,
    err,
    fail,
    run_async,
    settings,
    system_of,
)
from agentbus.errors import ConfigurationError
from agentbus.host import tune_gc_once
from agentbus.metrics import configure_metrics, shutdown_metrics
from agentbus.ops import GaugeRefresher, OpsServer
from agentbus.telemetry import configure_tracing, shutdown_tracing


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)


def run(
    services: Annotated[list[str], typer.Argument(help="Service names, or 'all'.")],
    amqp_url: Annotated[str | None, typer.Option("--amqp-url", help="Overrides AMQP_URL.")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
            "(AGENTBUS_METRICS_PORT).",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Run services as queue consumers until SIGINT/SIGTERM, then drain and exit 0."""
    env = environment()  # read once here; everything below is handed what it needs
    config = settings(env)
    if metrics_port is None:
        metrics_port = env.metrics_port
    app = application(env)
    try:
        chosen = app.resolve(services)
    except ConfigurationError as exc:
        fail(str(exc))
    if not chosen:
        fail("the application registers no services")
    names = [service.name for service in chosen]
    system = system_of(config, amqp_url, app, chosen, name=f"agentbus run {' '.join(names)}")
    service_name = "agentbus-" + "+".join(names)
    try:
        configure_tracing(service_name)
        meters = configure_metrics(
            service_name,
            prometheus=metrics_port is not None or any(s.serves_metrics for s in chosen),
        )
    except ConfigurationError as exc:
        fail(str(exc))

    async def go() -> None:
        await system.open()
        ops = OpsServer(system.host, metrics_port) if metrics_port is not None else None
        gauges = GaugeRefresher(system.host) if meters is not None else None
        started = ""
        try:
            if ops is not None:
                await ops.start()
                started = f"; /metrics, /healthz, /readyz on port {ops.port}"
            if gauges is not None:
                await gauges.start()

            def on_started() -> None:
                # Process-wide, so here and nowhere else: a harness or a test run that
                # starts hosts keeps the collector as it found it.
                tune_gc_once()
                err.print(f"running {', '.join(names)}{started}; Ctrl-C to stop", highlight=False)

            await system.serve_until_signalled(on_started)
        finally:
            if gauges is not None:
                await gauges.stop()
            if ops is not None:
                await ops.stop()
            await system.close()
            shutdown_tracing()
            shutdown_metrics()

    run_async(go)
    err.print("stopped", highlight=False)


def demo(
    amqp: Annotated[
        bool, typer.Option("--amqp", help="Run over RabbitMQ (AMQP_URL) instead of in-process.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show the trace of one suggestion as a tree.")
    ] = False,
) -> None:
    """The whole system in one process on embedded defaults, with a summary at the end."""
    env = environment()
    config = settings(env)
    app = application(env)
    try:
        runner = demo_of(app)
    except ConfigurationError as exc:
        fail(str(exc))
    if runner is None:
        fail(f"the application {app.name!r} has no demo")
    amqp_url = config.amqp_url if amqp else None
    if amqp and not amqp_url:
        fail("--amqp needs AMQP_URL")
    code = run_async(lambda: runner(DemoOptions(amqp_url, config, as_json, trace)))
    raise typer.Exit(code)
