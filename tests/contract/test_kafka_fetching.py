"""A Kafka group member whose prefetch window fills keeps reading as soon as there is
room, rather than once per fetch wait. (Kafka only: a group member fetches by itself,
where an AMQP broker pushes as acks free the window.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.transport.kafka_group import FETCH_WAIT_MS
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import KafkaHarness, eventually

pytestmark = pytest.mark.kafka

RECORDS = 400
PREFETCH = 8


async def test_a_small_prefetch_window_is_refilled_as_it_frees(kafka: KafkaHarness) -> None:
    transport = kafka.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    service = Service("windowed")
    handled: list[float] = []

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        handled.append(asyncio.get_running_loop().time())

    await bus.publish_many([sample("order.created", f"k{i % 16}", i) for i in range(RECORDS)])
    consumer = Consumer(service, bus, ConsumerSettings(prefetch=PREFETCH, concurrency=4))
    await consumer.start()
    await eventually(lambda: len(handled) >= RECORDS, kafka, timeout=60)
    await consumer.stop()
    # Waiting out a fetch per window would take (RECORDS / PREFETCH) fetch waits: 10 s.
    windows_waited = RECORDS / PREFETCH * FETCH_WAIT_MS / 1000
    elapsed = handled[-1] - handled[0]
    assert elapsed < windows_waited / 2, f"{RECORDS} records took {elapsed:.1f} s"
