"""What the consumer runtime counts and measures (the in-process broker, a real SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.metrics import use_meter_provider
from agentbus.service import Context, Service
from agentbus.transport.base import QueueSpec
from agentbus.transport.memory import InMemoryBroker
from tests.contract.catalog import CATALOG, sample


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    found = InMemoryMetricReader()
    use_meter_provider(MeterProvider(metric_readers=[found]))
    yield found
    use_meter_provider(None)


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_a_batch_is_one_processing_operation_of_many_events(
    reader: InMemoryMetricReader,
) -> None:
    transport = InMemoryBroker().connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    service = Service("batcher")
    sizes: list[int] = []

    @service.handles_batch("order.created", max_batch=8)
    async def handle(events: Sequence[Event[Any]], ctx: Context) -> None:
        sizes.append(len(events))

    consumer = Consumer(service, bus)
    await transport.declare(consumer.topology())
    await transport.declare([QueueSpec("sink", bindings=("#",))])
    for n in range(20):  # queued before the consumer starts: they come in batches
        await bus.publish(sample("order.created", "same-subject", n))
    await consumer.start()
    for _ in range(100):
        if consumer.stats.processed == 20:
            break
        await asyncio.sleep(0.01)
    await consumer.stop()
    assert sum(sizes) == 20
    assert len(sizes) < 20, sizes
    [events] = points(reader, "agentbus.consumer.events")
    assert events.value == 20
    [durations] = points(reader, "messaging.process.duration")
    assert durations.count == len(sizes) == consumer.stats.batches
