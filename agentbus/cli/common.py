"""What the commands share: settings, the application, connections, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from agentbus.app import Application, load_application
from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.environment import Environment, load_environment
from agentbus.errors import AgentbusError, ConfigurationError, one_line
from agentbus.settings import Settings
from agentbus.transport.base import Transport
from agentbus.transport.kafka import KafkaTransport
from agentbus.transport.rabbitmq import RabbitTransport

T = TypeVar("T")
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: what the CLI does on any error."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; errors become one line, never a traceback."""
    try:
        return asyncio.run(_as_coroutine(factory))
    except typer.Exit:
        raise
    except AgentbusError as exc:
        fail(one_line(str(exc)))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        if _debugging():
            raise
        fail(f"{one_line(f'{type(exc).__name__}: {exc}')} (set AGENTBUS_DEBUG=1 for a traceback)")


async def _as_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        fail(str(exc))


def environment() -> Environment:
    try:
        return load_environment()
    except ConfigurationError as exc:
        fail(str(exc))


def application() -> Application:
    try:
        return load_application()
    except ConfigurationError as exc:
        fail(str(exc))


def codec(app: Application) -> EventCodec:
    return EventCodec(app.catalog)


def broker_transport(
    config: Settings, url: str | None, *, name: str, event_types: Iterable[str] = ()
) -> Transport:
    """The broker's connection: RabbitMQ from `--amqp-url`, else Kafka when
    `KAFKA_BOOTSTRAP_SERVERS` is set (its topics made for `event_types`), else RabbitMQ
    from `AMQP_URL`."""
    if url is None and config.kafka_bootstrap_servers:
        return KafkaTransport(
            config.kafka_bootstrap_servers,
            prefix=config.kafka_prefix,
            partitions=config.kafka_partitions,
            replication=config.kafka_replication,
            event_types=event_types,
            client_id=name.replace(" ", "-"),
        )
    target = url or config.amqp_url
    if not target:
        fail(
            "no broker: set KAFKA_BOOTSTRAP_SERVERS (e.g. 127.0.0.1:9092), or AMQP_URL "
            "(e.g. amqp://guest:guest@127.0.0.1:5672/) or --amqp-url"
        )
    try:
        return RabbitTransport(target, exchange=config.exchange, connection_name=name)
    except ConfigurationError as exc:
        fail(str(exc))


async def open_bus(transport: Transport, app: Application) -> Bus:
    await transport.start()
    return Bus(transport, codec(app))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _debugging() -> bool:
    try:
        return load_environment().debug
    except ConfigurationError:
        return False  # the error being reported may be this very variable's
