"""The real servers the tests use, brought up by the project's own command when they are down.

A server that does not answer is started once per test session with
`deploy/dev/services up <server>`, its output shown as it runs
(`AGENTBUS_TEST_SERVERS=skip` opts out). A test whose server still does not answer
skips with a reason that names the command; under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "deploy/dev/services up"


@dataclass(frozen=True)
class Server:
    title: str
    name: str  # as deploy/dev/services names it
    default_port: int


RABBITMQ = Server("RabbitMQ", "rabbitmq", 5672)
POSTGRES = Server("PostgreSQL", "postgres", 5432)
KAFKA = Server("Kafka", "kafka", 9092)

_brought_up: set[str] = set()


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 2):
            return True
    except OSError:
        return False


def address(url: str, default_port: int) -> tuple[str, int]:
    # A Kafka bootstrap list is host:port; the others are URLs.
    parsed = urlparse(url if "://" in url else f"kafka://{url.split(',')[0]}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def bring_up(server: Server, unbuffered: Callable[[], AbstractContextManager[object]]) -> None:
    """Runs the servers command for one server, once per session."""
    if server.name in _brought_up or os.environ.get("AGENTBUS_TEST_SERVERS") == "skip":
        return
    _brought_up.add(server.name)
    with unbuffered():
        print(f"\n{server.title} is not ready: running {COMMAND} {server.name}", flush=True)
        subprocess.run([str(ROOT / "deploy/dev/services"), "up", server.name], check=False)


def missing(reason: str, server: Server) -> None:
    message = f"{reason} (bring it up with: {COMMAND} {server.name})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true: a missing server is a failure", pytrace=False)
    pytest.skip(message)


def require(
    server: Server,
    url: str,
    config: pytest.Config,
    ready: Callable[[str], str | None] | None = None,
) -> str:
    """The url, once its server answers (and `ready` finds nothing missing)."""
    host, port = address(url, server.default_port)

    def problem() -> str | None:
        if not answers(host, port):
            return f"{server.title} does not answer at {host}:{port}"
        return ready(url) if ready else None

    found = problem()
    if found is not None and host in ("127.0.0.1", "localhost"):
        bring_up(server, _unbuffered(config))
        found = problem()
    if found is not None:
        missing(found, server)
    return url


def _unbuffered(config: pytest.Config) -> Callable[[], AbstractContextManager[object]]:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        return nullcontext
    return capture.global_and_fixture_disabled


def consistent_hash_missing(url: str) -> str | None:
    """Partitioned queues need the broker's consistent-hash exchange plugin."""

    async def check() -> str | None:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=10)
        try:
            channel = await connection.channel()
            name = f"agentbus.tests.plugin-check.{os.getpid()}"
            try:
                exchange = await channel.declare_exchange(
                    name, "x-consistent-hash", auto_delete=True
                )
            except Exception as exc:  # the broker closes the channel on an unknown type
                return f"RabbitMQ lacks the rabbitmq_consistent_hash_exchange plugin ({exc})"
            await exchange.delete()
            return None
        finally:
            await connection.close()

    # Its own thread and loop: the fixture may be asked for from inside a running loop.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: asyncio.run(check())).result()


CLUSTER_COMMAND = "deploy/dev/services cluster up"


def require_cluster(url: str, ports: Sequence[int], config: pytest.Config) -> str:
    """The cluster's url, once every node answers; brought up once per session with
    `deploy/dev/services cluster up`, else skipped (failed under CI=true)."""

    def problem() -> str | None:
        down = [port for port in ports if not answers("127.0.0.1", port)]
        return f"the RabbitMQ cluster does not answer on port {down[0]}" if down else None

    found = problem()
    if found is not None and os.environ.get("AGENTBUS_TEST_SERVERS") != "skip":
        with _unbuffered(config)():
            print(f"\n{found}: running {CLUSTER_COMMAND}", flush=True)
            subprocess.run([str(ROOT / "deploy/dev/services"), "cluster", "up"], check=False)
        found = problem()
    if found is not None:
        message = f"{found} (bring it up with: {CLUSTER_COMMAND})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true: a missing server is a failure", pytrace=False)
        pytest.skip(message)
    return url
