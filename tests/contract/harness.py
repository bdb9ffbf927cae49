"""One harness per transport, so the same contract tests run on both.

`memory` is the in-process broker on a virtual clock; `rabbitmq` is the real
server on 127.0.0.1 with an exchange and queues unique to the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from agentbus.clock import VirtualClock
from agentbus.transport.base import Transport
from agentbus.transport.memory import InMemoryBroker, MemoryTransport
from agentbus.transport.rabbitmq import RabbitTransport


class Harness(Protocol):
    name: str
    exchange: str

    def connect(self) -> Transport: ...

    async def advance(self, seconds: float) -> None:
        """Let `seconds` of broker time pass (virtual on memory, real on RabbitMQ)."""
        ...

    def now(self) -> float: ...

    def queue(self, label: str) -> str: ...

    async def drop_connections(self, transport: Transport) -> None:
        """The broker closes the transport's connection; the client reconnects."""
        ...

    async def cleanup(self) -> None: ...


class MemoryHarness:
    name = "memory"

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

    async def cleanup(self) -> None:
        return None


class RabbitHarness:
    name = "rabbitmq"

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


async def _test_queues(run: str) -> list[str]:
    listing = await _rabbitmqctl("list_queues", "name", "--quiet", "--no-table-headers")
    return [line.strip() for line in listing.splitlines() if f".{run}." in line]


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
