"""What the commands share: settings, the application, connections, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from agentbus.app import Application, load_application
from agentbus.bootstrap import System, bootstrap, transport_for, with_amqp_url
from agentbus.envelope import EventCodec
from agentbus.environment import Environment, load_environment
from agentbus.errors import AgentbusError, ConfigurationError, one_line
from agentbus.service import Service
from agentbus.settings import Settings
from agentbus.transport.base import Transport

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


def settings(env: Environment | None = None) -> Settings:
    """The settings from `env`, read once by the command; else from the process's."""
    try:
        return Settings.of(env if env is not None else load_environment())
    except ConfigurationError as exc:
        fail(str(exc))


def environment() -> Environment:
    try:
        return load_environment()
    except ConfigurationError as exc:
        fail(str(exc))


def application(env: Environment | None = None) -> Application:
    try:
        return load_application(env)
    except ConfigurationError as exc:
        fail(str(exc))


def codec(app: Application) -> EventCodec:
    return EventCodec(app.catalog)


def broker_transport(
    config: Settings, url: str | None, *, name: str, event_types: Iterable[str] = ()
) -> Transport:
    """The broker's connection: RabbitMQ from `--amqp-url`, else Kafka when
    `KAFKA_BOOTSTRAP_SERVERS` is set (its topics made for `event_types`), else RabbitMQ
    from `AMQP_URL`; never the in-process broker, where a command would be alone."""
    try:
        return transport_for(
            with_amqp_url(config, url), name=name, event_types=event_types, embedded=False
        )
    except ConfigurationError as exc:
        fail(str(exc))


def system_of(
    config: Settings,
    url: str | None,
    app: Application,
    services: Sequence[Service] = (),
    *,
    name: str,
) -> System:
    """The command's system (`agentbus.bootstrap`) on the broker `broker_transport` picks."""
    try:
        return bootstrap(
            with_amqp_url(config, url), app.catalog, services, name=name, embedded=False
        )
    except ConfigurationError as exc:
        fail(str(exc))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _debugging() -> bool:
    try:
        return load_environment().debug
    except ConfigurationError:
        return False  # the error being reported may be this very variable's
