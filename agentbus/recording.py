"""Recordings: JSONL files of CloudEvents, one per line, as `agentbus record` writes them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agentbus.bus import Bus
from agentbus.envelope import CONTENT_TYPE, Event, EventCodec
from agentbus.errors import AgentbusError, MalformedEvent
from agentbus.telemetry import inject_headers
from agentbus.transport.base import Delivery, Message, QueueSpec, Transport


class RecordingError(AgentbusError):
    """A recording cannot be read: names the file, the line and the reason."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    line: int
    raw: bytes
    event: Event[Any]


def read_recording(path: Path, codec: EventCodec) -> list[RecordedEvent]:
    """Every event of the file, validated; the first bad line raises `RecordingError`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        return list(_parse(path, handle, codec))


def _parse(path: Path, handle: IO[bytes], codec: EventCodec) -> Iterator[RecordedEvent]:
    for number, line in enumerate(handle, start=1):
        raw = line.strip()
        if not raw:
            continue
        try:
            event = codec.decode(raw)
        except MalformedEvent as exc:
            raise RecordingError(f"{path}:{number}: {exc.code}: {exc.detail}") from None
        yield RecordedEvent(number, raw, event)


async def publish_recording(
    bus: Bus,
    events: list[RecordedEvent],
    *,
    window: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish the recorded bodies unchanged, so ids, types, subjects and data all match."""
    published = 0
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        messages = []
        for recorded in chunk:
            headers: dict[str, Any] = {}
            inject_headers(headers)
            messages.append(
                Message(
                    body=recorded.raw,
                    routing_key=recorded.event.type,
                    message_id=recorded.event.id,
                    type=recorded.event.type,
                    content_type=CONTENT_TYPE,
                    headers=headers,
                )
            )
        await bus.transport.publish_many(messages)
        published += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return published


def as_line(body: bytes) -> bytes | None:
    """One JSONL line for a body: as it is when it is one line of JSON, else compacted."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    if b"\n" in body or b"\r" in body:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return body.strip()


async def record(
    transport: Transport,
    out: IO[bytes],
    *,
    stop: asyncio.Event,
    pattern: str = "#",
    limit: int | None = None,
    on_event: Callable[[int], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Write every event published on the exchange until `stop` is set or `limit` reached.

    Returns (events written, bodies skipped because they were not JSON objects).
    """
    queue = f"agentbus.record.{uuid.uuid4().hex[:12]}"
    await transport.declare(
        [QueueSpec(name=queue, bindings=(pattern,), kind="classic", transient=True)]
    )
    written = 0
    skipped = 0

    async def on_delivery(delivery: Delivery) -> None:
        nonlocal written, skipped
        if limit is not None and written >= limit:
            return
        line = as_line(delivery.message.body)
        if line is None:
            skipped += 1
        else:
            out.write(line + b"\n")
            written += 1
            if on_event is not None:
                on_event(written)
        await delivery.ack()
        if limit is not None and written >= limit:
            stop.set()

    subscription = await transport.consume(queue, on_delivery, prefetch=256)
    if on_ready is not None:
        on_ready(queue)
    try:
        await stop.wait()
    finally:
        await subscription.cancel()
        out.flush()
    return written, skipped
