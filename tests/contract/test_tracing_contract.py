"""Trace context crosses the broker: one trace from a publish to what it caused."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.service import Context, Service
from tests.contract.catalog import CATALOG, MODELS, sample
from tests.contract.harness import Harness, eventually
from tests.tracing import SpanRecorder

pytestmark = pytest.mark.rabbitmq


async def test_publish_process_publish_process_is_one_trace(
    harness: Harness, spans: SpanRecorder
) -> None:
    transport = harness.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    first = Service(harness.queue("first"))
    second = Service(harness.queue("second"))
    seen: list[Event[Any]] = []

    @first.handles("order.created")
    async def on_order(event: Event[Any], ctx: Context) -> None:
        ctx.emit(MODELS["inventory.low"](key=event.data.key, seq=event.data.seq), cause=event)

    @second.handles("inventory.low")
    async def on_low(event: Event[Any], ctx: Context) -> None:
        seen.append(event)

    consumers = [Consumer(first, bus), Consumer(second, bus)]
    for consumer in consumers:
        await consumer.start()
    order = sample("order.created", "sku-9", 1)
    await bus.publish(order)
    await eventually(lambda: len(seen) == 1, harness)
    for consumer in consumers:
        await consumer.stop()

    low = seen[0]
    assert low.causationid == order.id
    assert low.correlationid == order.id
    finished = spans.finished()
    publish_order = one(finished, f"publish {bus.transport.exchange}", order.id)
    process_order = one(finished, f"process {first.queue}", order.id)
    publish_low = one(finished, f"publish {bus.transport.exchange}", low.id)
    process_low = one(finished, f"process {second.queue}", low.id)

    assert publish_order.kind is SpanKind.PRODUCER
    assert process_order.kind is SpanKind.CONSUMER
    chain = [publish_order, process_order, publish_low, process_low]
    assert len({span.context.trace_id for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id

    attributes = dict(process_order.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == bus.transport.exchange
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "order.created"
    publish_attributes = dict(publish_low.attributes or {})
    assert publish_attributes["messaging.operation.type"] == "send"
    assert publish_attributes["messaging.message.id"] == low.id


def one(spans: list[ReadableSpan], name: str, message_id: str) -> ReadableSpan:
    found = [
        span
        for span in spans
        if span.name == name and (span.attributes or {}).get("messaging.message.id") == message_id
    ]
    assert len(found) == 1, f"{len(found)} spans named {name!r} for {message_id}"
    return found[0]
