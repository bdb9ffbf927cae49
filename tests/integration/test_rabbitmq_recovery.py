"""A consumer comes back by itself after the broker closes its connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.errors import BrokerUnavailable
from agentbus.retry import RetryPolicy, topology
from agentbus.service import Context, Service
from agentbus.transport.base import Delivery, Message
from agentbus.transport.rabbitmq import RabbitTransport
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


async def test_a_consumer_the_broker_cancels_is_subscribed_again_and_keeps_handling(
    amqp_url: str,
) -> None:
    """The broker cancels a consumer when its queue goes (a quorum queue losing its
    leader with a node does the same): once the queue answers again the consumer is back,
    and its deliveries are the transport's own, acked as usual. Here the queue is deleted
    under the consumer and declared again, which a single broker can do on demand."""
    name = f"agentbus.test.cancelled.{uuid.uuid4().hex[:8]}"
    exchange = f"{name}.x"
    specs = topology(name, ("cancel.*",), RetryPolicy(max_attempts=3))
    transport = RabbitTransport(amqp_url, exchange=exchange, reconnect_interval=0.2)
    await transport.start()
    got: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        got.append(delivery.message.body)
        await delivery.ack()

    def message(body: bytes) -> Message:
        return Message(body=body, routing_key="cancel.it", message_id=body.decode())

    try:
        await transport.declare(specs)
        await transport.consume(name, handle, prefetch=10)
        await transport.publish(message(b"before"))
        await wait_for(lambda: got == [b"before"], 10)

        await transport.delete_queue(name)  # the broker cancels the consumer
        # The queue's owner declares it again a moment later (declared again within
        # milliseconds, the broker was seen to leave the consumer on the deleted queue).
        await asyncio.sleep(1)
        await transport.declare(specs)
        sent = 0
        deadline = asyncio.get_running_loop().time() + 30
        while not any(body.startswith(b"after") for body in got):
            assert asyncio.get_running_loop().time() < deadline, "not subscribed again in 30 s"
            await transport.publish(message(f"after-{sent}".encode()))
            sent += 1
            await asyncio.sleep(0.5)
        # Later messages arrive once each, whole.
        await transport.publish(message(b"last"))
        await wait_for(lambda: b"last" in got, 10)
        await asyncio.sleep(0.5)
        assert got.count(b"last") == 1
    finally:
        with contextlib.suppress(Exception):
            for spec in specs:
                await transport.delete_queue(spec.name)
        await transport.close()
