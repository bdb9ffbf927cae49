"""Messages as the official CloudEvents SDK (PyPI `cloudevents`) makes them for RabbitMQ.

A producer in another stack uses the SDK, not agentbus: these are its two content modes,
structured and binary (its default binding), turned into transport messages.
"""

from __future__ import annotations

import json
from typing import Any

from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent

from agentbus.envelope import Event
from agentbus.transport.base import Message


def sdk_event(event: Event[Any]) -> CloudEvent:
    """The same event as the SDK's own object: every attribute, the data as JSON."""
    wire = json.loads(event.model_dump_json(exclude_none=True))
    data = wire.pop("data")
    wire["time"] = event.time
    return CloudEvent(attributes=wire, data=data)


def as_message(
    made: rabbitmq.RabbitMQMessage, routing_key: str, message_id: str | None = None
) -> Message:
    return Message(
        body=made.body,
        routing_key=routing_key,
        message_id=message_id,
        content_type=made.content_type,
        headers=dict(made.headers),
    )


def binary(event: Event[Any], message_id: str | None = None) -> Message:
    return as_message(rabbitmq.to_binary_event(sdk_event(event)), event.type, message_id)


def structured(event: Event[Any], message_id: str | None = None) -> Message:
    return as_message(rabbitmq.to_structured_event(sdk_event(event)), event.type, message_id)


def parse(message: Message) -> CloudEvent:
    """What the SDK reads in a message, in whichever mode it came."""
    return rabbitmq.from_rabbitmq_event(
        rabbitmq.RabbitMQMessage(
            headers={k: v for k, v in message.headers.items() if isinstance(v, str)},
            content_type=message.content_type,
            body=message.body,
        )
    )
