"""Trace context crosses the broker, and the spans read right against the OpenTelemetry
semantic conventions for messaging (messaging-spans.md) and their RabbitMQ part
(rabbitmq.md), both as of semantic conventions 1.4x.

Each assertion names the requirement it checks and its level in the conventions.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.errors import PermanentError
from agentbus.service import Context, Service
from agentbus.transport.base import Message
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
    exchange = bus.transport.exchange
    finished = spans.finished()
    publish_order = one(finished, publish_name(harness, exchange, "order.created"), order.id)
    process_order = one(
        finished, process_name(harness, exchange, "order.created", first.queue), order.id
    )
    publish_low = one(finished, publish_name(harness, exchange, "inventory.low"), low.id)
    process_low = one(
        finished, process_name(harness, exchange, "inventory.low", second.queue), low.id
    )

    chain = [publish_order, process_order, publish_low, process_low]
    assert len({span.context.trace_id for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id
    for producer, process, routing_key, queue in (
        (publish_order, process_order, "order.created", first.queue),
        (publish_low, process_low, "inventory.low", second.queue),
    ):
        check_publish(producer, harness, exchange, routing_key)
        check_process(process, producer, harness, exchange, routing_key, queue)


def publish_name(harness: Harness, exchange: str, routing_key: str) -> str:
    if harness.name == "kafka":
        # kafka.md: the destination is the topic, the span `{operation} {topic}`.
        return f"publish {exchange}{routing_key}"
    return f"publish {exchange}:{routing_key}"


def process_name(harness: Harness, exchange: str, routing_key: str, queue: str) -> str:
    if harness.name == "kafka":
        return f"process {exchange}{routing_key}"
    return f"process {exchange}:{routing_key}:{queue}"


def check_common(span: ReadableSpan, harness: Harness) -> dict[str, Any]:
    attributes = dict(span.attributes or {})
    # messaging-spans.md, Required: messaging.system and messaging.operation.name.
    assert attributes["messaging.operation.name"]
    if harness.name == "rabbitmq":
        # rabbitmq.md: messaging.system MUST be set to "rabbitmq".
        assert attributes["messaging.system"] == "rabbitmq"
        # messaging-spans.md: server.address Conditionally Required if available;
        # server.port Recommended.
        broker = urlsplit(getattr(harness, "url"))  # noqa: B009 - the RabbitMQ harness's
        assert attributes["server.address"] == broker.hostname
        assert attributes["server.port"] == (broker.port or 5672)
    elif harness.name == "kafka":
        # kafka.md: messaging.system MUST be "kafka"; the bootstrap server names the broker.
        assert attributes["messaging.system"] == "kafka"
        host, _, port = getattr(harness, "bootstrap").split(",")[0].rpartition(":")  # noqa: B009
        assert attributes["server.address"] == host
        assert attributes["server.port"] == int(port)
        assert not any(name.startswith("messaging.rabbitmq.") for name in attributes)
    else:
        # The in-process broker is not RabbitMQ, and has no server to name.
        assert attributes["messaging.system"] == "in_process"
        assert not any(name.startswith("messaging.rabbitmq.") for name in attributes)
        assert "server.address" not in attributes
    # messaging-spans.md, Recommended if the span describes one message: messaging.message.id;
    # Recommended: messaging.message.conversation_id (our correlationid).
    assert attributes["messaging.message.id"]
    assert attributes["messaging.message.conversation_id"]
    # messaging-spans.md: messaging.batch.message_count SHOULD NOT be set on a span of one
    # message; error.type SHOULD NOT be set when the operation succeeded.
    assert "messaging.batch.message_count" not in attributes
    assert "error.type" not in attributes
    assert span.status.status_code is not StatusCode.ERROR
    return attributes


def check_publish(span: ReadableSpan, harness: Harness, exchange: str, routing_key: str) -> None:
    attributes = check_common(span, harness)
    # Span kind: a send span whose context is the message's creation context is PRODUCER.
    assert span.kind is SpanKind.PRODUCER
    # messaging.operation.type Conditionally Required: "send" for a publish.
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.operation.name"] == "publish"
    # rabbitmq.md, messaging.destination.name Required: `{exchange}:{routing key}` on the
    # producer side; span name SHOULD be `{messaging.operation.name} {destination}`.
    assert span.name == publish_name(harness, exchange, routing_key)
    assert span.name == f"publish {attributes['messaging.destination.name']}"
    if harness.name == "rabbitmq":
        # rabbitmq.md: messaging.rabbitmq.destination.routing_key Conditionally Required
        # if not empty.
        assert attributes["messaging.rabbitmq.destination.routing_key"] == routing_key


def check_process(
    span: ReadableSpan,
    producer: ReadableSpan,
    harness: Harness,
    exchange: str,
    routing_key: str,
    queue: str,
) -> None:
    attributes = check_common(span, harness)
    # Span kind: process spans are CONSUMER.
    assert span.kind is SpanKind.CONSUMER
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.operation.name"] == "process"
    # rabbitmq.md: `{exchange}:{routing key}:{queue}` on the consumer side; span name
    # `{messaging.operation.name} {destination}`.
    assert span.name == process_name(harness, exchange, routing_key, queue)
    assert span.name == f"process {attributes['messaging.destination.name']}"
    # messaging-spans.md: a process span SHOULD link to the message's creation context
    # (here the publish span, whose context the message carries), and MAY have it as parent.
    assert [link.context.span_id for link in span.links] == [producer.context.span_id]
    assert span.links[0].context.trace_id == producer.context.trace_id
    if harness.name == "rabbitmq":
        assert attributes["messaging.rabbitmq.destination.routing_key"] == routing_key
        # rabbitmq.md: messaging.rabbitmq.message.delivery_tag Conditionally Required when
        # available (an int).
        tag = attributes["messaging.rabbitmq.message.delivery_tag"]
        assert isinstance(tag, int)
        assert tag >= 1
    if harness.name == "kafka":
        # kafka.md: messaging.consumer.group.name and messaging.kafka.offset when available.
        assert attributes["messaging.consumer.group.name"] == f"{exchange}{queue}"
        assert isinstance(attributes["messaging.kafka.offset"], int)


async def test_a_failed_process_span_says_why(harness: Harness, spans: SpanRecorder) -> None:
    transport = harness.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    service = Service(harness.queue("refuser"))
    handled: list[str] = []

    @service.handles("order.created")
    async def refuse(event: Event[Any], ctx: Context) -> None:
        handled.append(event.id)
        raise PermanentError("no", code="refused")

    consumer = Consumer(service, bus)
    await consumer.start()
    refused = sample("order.created", "k", 1)
    await bus.publish(refused)
    await eventually(lambda: consumer.stats.dead_lettered == 1, harness)
    await consumer.stop()
    [span] = [
        s
        for s in spans.finished()
        if s.name.startswith("process ")
        and (s.attributes or {}).get("messaging.message.id") == refused.id
    ]
    # messaging-spans.md: error.type Conditionally Required if and only if the operation
    # failed, low-cardinality: the reason code.
    assert (span.attributes or {})["error.type"] == "refused"
    # Recording errors: the span status is Error.
    assert span.status.status_code is StatusCode.ERROR


async def test_a_message_without_trace_context_gets_a_process_span_without_links(
    harness: Harness, spans: SpanRecorder
) -> None:
    transport = harness.connect()
    await transport.start()
    codec = EventCodec(CATALOG)
    bus = Bus(transport, codec)
    service = Service(harness.queue("plain"))
    handled: list[str] = []

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        handled.append(event.id)

    consumer = Consumer(service, bus)
    await consumer.start()
    event = sample("order.created", "k", 2)
    # Published as a client that knows nothing of tracing would: no traceparent.
    await transport.publish(
        Message(
            body=codec.encode(event),
            routing_key=event.type,
            content_type="application/cloudevents+json",
        )
    )
    await eventually(lambda: handled == [event.id], harness)
    await consumer.stop()
    [span] = [
        s for s in spans.finished() if (s.attributes or {}).get("messaging.message.id") == event.id
    ]
    assert span.parent is None
    assert not span.links


def one(spans: list[ReadableSpan], name: str, message_id: str) -> ReadableSpan:
    found = [
        span
        for span in spans
        if span.name == name and (span.attributes or {}).get("messaging.message.id") == message_id
    ]
    assert len(found) == 1, f"{len(found)} spans named {name!r} for {message_id}"
    return found[0]
