"""A `Message` as a Kafka record and back, as the contract's Kafka binding puts it.

The key is the event's ordering key (its subject, else its id), the value the body, and
the content type travels in a `content-type` header. Header values are bytes on Kafka:
text goes as UTF-8 and numbers as their decimal text; the few headers the runtime reads
as numbers come back as numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentbus.retry import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_CODE_HEADER,
    ERROR_DETAIL_HEADER,
    FAILED_AT_HEADER,
    ORIGIN_QUEUE_HEADER,
    ROUTING_KEY_HEADER,
)
from agentbus.transport.base import PARTITION_KEY_HEADER, HeaderValue, Message

CONTENT_TYPE_HEADER = "content-type"
ORIGINAL_TOPIC_HEADER = "agentbus-original-topic"
ORIGINAL_PARTITION_HEADER = "agentbus-original-partition"
ORIGINAL_OFFSET_HEADER = "agentbus-original-offset"

# The runtime names its failure headers with AMQP's `x-` for extensions; the Kafka
# binding names them without it.
_WIRE_NAMES = {
    name: name.removeprefix("x-")
    for name in (
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        ERROR_CODE_HEADER,
        ERROR_DETAIL_HEADER,
        FAILED_AT_HEADER,
        ORIGIN_QUEUE_HEADER,
        ROUTING_KEY_HEADER,
    )
}
_RUNTIME_NAMES = {wire: name for name, wire in _WIRE_NAMES.items()}
_NUMBERS = frozenset(
    {ATTEMPT_HEADER, ATTEMPTS_HEADER, ORIGINAL_PARTITION_HEADER, ORIGINAL_OFFSET_HEADER}
)

RecordHeaders = list[tuple[str, bytes]]


def record_key(message: Message) -> bytes | None:
    """The ordering key the bus put on the message; a message without one (not made by
    the bus) goes to any partition."""
    key = message.headers.get(PARTITION_KEY_HEADER) or message.message_id
    return None if key is None else str(key).encode()


def record_headers(message: Message) -> RecordHeaders:
    headers: RecordHeaders = []
    if message.content_type is not None:
        headers.append((CONTENT_TYPE_HEADER, message.content_type.encode()))
    for name, value in message.headers.items():
        headers.append((_WIRE_NAMES.get(name, name), _to_bytes(value)))
    return headers


def to_message(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    routing_key: str,
    event_type: str | None,
    key: bytes | None = None,
) -> Message:
    """The message a record carries. `event_type` is what its topic says the event is
    (None for topics that are not one event type, such as dead letters). A record's key
    that no header repeats (a producer other than the bus) is kept as the ordering key,
    so that a dead letter, and a redrive of it, lands on the partition of its key."""
    content_type: str | None = None
    read: dict[str, HeaderValue] = {}
    for wire, raw in headers:
        if wire.lower() == CONTENT_TYPE_HEADER:
            text = _text_or_bytes(raw)
            content_type = text if isinstance(text, str) else None
            continue
        name = _RUNTIME_NAMES.get(wire, wire)
        read[name] = _from_bytes(name, raw)
    if key is not None and PARTITION_KEY_HEADER not in read:
        text = _text_or_bytes(key)
        if isinstance(text, str):
            read[PARTITION_KEY_HEADER] = text
    return Message(
        body=value or b"",
        routing_key=routing_key,
        message_id=None,
        type=event_type,
        content_type=content_type,
        headers=read,
    )


def _to_bytes(value: HeaderValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | float):
        return str(value).encode()
    return json.dumps(value, default=str).encode()


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw  # left as it came: the codec refuses it with a reason


def _from_bytes(name: str, raw: bytes) -> Any:
    value = _text_or_bytes(raw)
    if name in _NUMBERS and isinstance(value, str) and value.isdigit():
        return int(value)
    return value
