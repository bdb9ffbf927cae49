"""A consumer comes back by itself after the broker closes its connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.errors import BrokerUnavailable
from agentbus.service import Context, Service
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import RabbitHarness

pytestmark = pytest.mark.rabbitmq


async def wait_for(check: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)


async def publish_until_accepted(bus: Bus, event: Event[Any], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await bus.publish(event)
            return
        except BrokerUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_consumer_resumes_after_server_closes_all_connections(amqp_url: str) -> None:
    harness = RabbitHarness(amqp_url)
    try:
        transport = harness.connect()
        await transport.start()
        bus = Bus(transport, EventCodec(CATALOG))
        seen: list[int] = []
        service = Service(harness.queue("resilient"))

        @service.handles("order.created")
        async def handle(event: Event[Any], ctx: Context) -> None:
            seen.append(event.data.seq)

        consumer = Consumer(service, bus)
        await consumer.start()
        await bus.publish(sample("order.created", "k", 1))
        await wait_for(lambda: seen == [1], 10)

        closer = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "close_all_connections",
            "closed by the recovery test",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(closer.communicate(), 60)
        assert closer.returncode == 0, stderr.decode()
        await asyncio.sleep(0.5)

        await publish_until_accepted(bus, sample("order.created", "k", 2))
        await wait_for(lambda: seen == [1, 2], 30)
        await consumer.stop()
    finally:
        await harness.cleanup()
