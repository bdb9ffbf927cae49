"""One harness per transport, so the same contract tests run on all of them.

`memory` is the in-process broker on a virtual clock; `rabbitmq` is the real
server on 127.0.0.1 with an exchange and queues unique to the test; `kafka` is the
real broker with a topic and group prefix unique to the test.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest

from agentbus.clock import VirtualClock
from agentbus.transport.base import Transport
from agentbus.transport.kafka import KafkaTransport
from agentbus.transport.memory import InMemoryBroker, MemoryTransport
from agentbus.transport.rabbitmq import RabbitTransport
from tests.contract.catalog import CATALOG

SERVICES = Path(__file__).parents[2] / "deploy" / "dev" / "services"


class Harness(Protocol):
    name: str
    exchange: str
    # Whether the broker marks a message delivered before as redelivered (AMQP does;
    # a Kafka record carries no such flag).
    flags_redelivery: bool

    def connect(self) -> Transport: ...

    async def advance(self, seconds: float) -> None:
        """Let `seconds` of broker time pass (virtual on memory, real on RabbitMQ)."""
        ...

    def now(self) -> float: ...

    def queue(self, label: str) -> str: ...

    async def drop_connections(self, transport: Transport) -> None:
        """The broker closes the transport's connection; the client reconnects."""
        ...

    async def restart_broker(self) -> None:
        """Stop the broker and start it again, waiting until it answers (the shared
        server: the only tests that do this are the ones about it)."""
        ...

    async def cleanup(self) -> None: ...


class MemoryHarness:
    name = "memory"
    flags_redelivery = True

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.exchange = "agentbus.events"
        self.broker = InMemoryBroker(clock=self.clock, exchange=self.exchange)

    def connect(self) -> Transport:
        return self.broker.connect()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    def now(self) -> float:
        return self.clock.now()

    def queue(self, label: str) -> str:
        return label

    async def drop_connections(self, transport: Transport) -> None:
        assert isinstance(transport, MemoryTransport)
        await transport.reconnect()

    async def restart_broker(self) -> None:
        pytest.skip("the in-process broker is no server: there is no broker to restart")

    async def cleanup(self) -> None:
        return None


class RabbitHarness:
    name = "rabbitmq"
    flags_redelivery = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:10]
        self.exchange = f"agentbus.test.{self.run}"
        self.transports: list[RabbitTransport] = []

    def connect(self) -> Transport:
        transport = RabbitTransport(
            self.url,
            exchange=self.exchange,
            connection_name=f"test {self.run}",
            reconnect_interval=0.3,
        )
        self.transports.append(transport)
        return transport

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def queue(self, label: str) -> str:
        return f"test.{self.run}.{label}"

    async def drop_connections(self, transport: Transport) -> None:
        # Server side, as a broker restart or a network cut ends them: every
        # connection of this test run (they are named after it).
        listing = await _rabbitmqctl(
            "list_connections", "pid", "client_properties", "--quiet", "--no-table-headers"
        )
        pids = [line.split()[0] for line in listing.splitlines() if f"test {self.run}" in line]
        assert pids, "no connection of this run is open"
        for pid in pids:
            await _rabbitmqctl("close_connection", pid, "test: connection dropped")

    async def restart_broker(self) -> None:
        # The application, not the Erlang node: what an operator's restart does to
        # clients (every connection closed, refused until it is back), in seconds.
        await _command("rabbitmqctl", "stop_app")
        await _command("rabbitmqctl", "start_app")
        await _command("rabbitmqctl", "await_startup")

    async def cleanup(self) -> None:
        import aio_pika

        for transport in self.transports:
            await transport.close()
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            for suffix in await _test_queues(self.run):
                await channel.queue_delete(suffix)
            listing = await _rabbitmqctl("list_exchanges", "name", "--quiet", "--no-table-headers")
            for name in listing.split():
                if name == self.exchange or name.startswith(f"{self.exchange}."):
                    await channel.exchange_delete(name)


class KafkaHarness:
    name = "kafka"
    flags_redelivery = False

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.run = uuid.uuid4().hex[:10]
        self.prefix = f"agentbus.test.{self.run}."
        self.exchange = self.prefix
        self.transports: list[KafkaTransport] = []

    def connect(self) -> Transport:
        transport = KafkaTransport(
            self.bootstrap,
            prefix=self.prefix,
            # The platform creates a topic per type of the application's catalog.
            event_types=CATALOG,
            client_id=f"test-{self.run}",
            metadata_max_age_ms=2000,
        )
        self.transports.append(transport)
        return transport

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def queue(self, label: str) -> str:
        return label  # the transport puts the run's prefix before groups and topics

    async def drop_connections(self, transport: Transport) -> None:
        # Kafka's counterpart of a dropped AMQP channel is a rebalance: another member
        # joins each group of the run and leaves again, and every member loses (then
        # gets back) its partitions on the way, with whatever it held unsettled.
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            groups = [
                g[0] for g in await admin.list_consumer_groups() if g[0].startswith(self.prefix)
            ]
        finally:
            await admin.close()
        assert groups, "no consumer group of this run is active"
        for group in groups:
            intruder = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
            )
            intruder.subscribe(pattern=f"^{re.escape(self.prefix)}.*")
            await intruder.start()
            try:
                deadline = asyncio.get_running_loop().time() + 20
                while not intruder.assignment():
                    assert asyncio.get_running_loop().time() < deadline, "no rebalance happened"
                    await intruder.getmany(timeout_ms=100)
            finally:
                await intruder.stop()

    async def restart_broker(self) -> None:
        # The way the development servers command runs it: SIGTERM (a controlled
        # shutdown), then a new JVM on the same data.
        await _command(str(SERVICES), "down", "kafka")
        host, _, port = self.bootstrap.split(",")[0].rpartition(":")
        assert not await _answers(host, int(port)), (
            "Kafka still answers: it was not started by deploy/dev/services, so it is "
            "not the tests' to restart"
        )
        await _command(str(SERVICES), "up", "kafka")

    async def cleanup(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.protocol.admin import DeleteGroupsRequest

        for transport in self.transports:
            await transport.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if topics:
                await admin.delete_topics(topics)
            groups = [
                g[0] for g in await admin.list_consumer_groups() if g[0].startswith(self.prefix)
            ]
            for group in groups:
                # aiokafka's admin client has no call for it: the request goes as the
                # protocol defines it, to the group's coordinator.
                node = await admin.find_coordinator(group)
                await admin._send_request_to_node(node, DeleteGroupsRequest([group]))
        finally:
            await admin.close()


async def _test_queues(run: str) -> list[str]:
    listing = await _rabbitmqctl("list_queues", "name", "--quiet", "--no-table-headers")
    return [line.strip() for line in listing.splitlines() if f".{run}." in line]


async def _command(*args: str, timeout: float = 180) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"{' '.join(args)} failed: {out.decode()[-500:]}"


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _rabbitmqctl(command: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        command,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return out.decode()


async def eventually(
    check: Callable[[], bool], harness: Harness, *, timeout: float = 10.0, step: float = 0.02
) -> None:
    """Advance broker time until `check()` holds, or fail after `timeout` seconds of it."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s on {harness.name}")
        await harness.advance(step)
        if harness.name == "memory":
            await asyncio.sleep(0.002)  # handlers may wait on real time too
        waited += step


Check = Callable[[], Awaitable[bool]]
