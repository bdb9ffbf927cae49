"""Publishing events: envelope to AMQP message, with a producer span per publish."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from agentbus.conventions import publish_span
from agentbus.envelope import CONTENT_TYPE, Event, EventCodec
from agentbus.telemetry import inject_headers, tracer
from agentbus.transport.base import PARTITION_KEY_HEADER, Message, Transport


class Bus:
    """Publishes catalog events on the events exchange of a transport."""

    def __init__(self, transport: Transport, codec: EventCodec) -> None:
        self.transport = transport
        self.codec = codec

    def to_message(self, event: Event[Any]) -> Message:
        """The AMQP message of an event, carrying the current trace context."""
        headers: dict[str, Any] = {PARTITION_KEY_HEADER: event.key}
        inject_headers(headers)
        return Message(
            body=self.codec.encode(event),
            routing_key=event.type,
            message_id=event.id,
            type=event.type,
            content_type=CONTENT_TYPE,
            headers=headers,
        )

    async def publish(self, event: Event[Any]) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[Event[Any]]) -> None:
        """Publish with confirms; each event gets its own `publish` span."""
        if not events:
            return
        messages: list[Message] = []
        spans: list[trace.Span] = []
        exchange = self.transport.exchange
        broker = self.transport.broker_info
        for event in events:
            name, attributes = publish_span(
                broker, exchange, event.type, event.id, event.correlationid
            )
            span = tracer().start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
            spans.append(span)
            with trace.use_span(span, end_on_exit=False):
                messages.append(self.to_message(event))
        try:
            await self.transport.publish_many(messages)
        except Exception as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.StatusCode.ERROR)
            raise
        finally:
            for span in spans:
                span.end()
