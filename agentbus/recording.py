"""Recordings: JSONL files of CloudEvents, one per line, as `agentbus record` writes them.

Whatever the exchange carries, a recording holds two kinds of lines: events of the
catalog in structured form (a binary-mode event is put in structured form, so a
recording reads the same whoever produced it), and skipped entries, one per message
that was not such an event:

    {"agentbus.skipped": {"reason": "wrong_content_type", "detail": "...", ...}}

A skipped entry keeps what the message was (properties, headers, body) and why it was
not recorded as an event. `publish` replays exactly the events and passes over the
skipped entries; any other line is a fault of the file, which it refuses whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from agentbus.bus import Bus
from agentbus.envelope import CONTENT_TYPE, Event, EventCodec, is_binary, to_structured
from agentbus.errors import AgentbusError, BrokerUnavailable, MalformedEvent
from agentbus.telemetry import inject_headers
from agentbus.transport.base import Delivery, Message, QueueKind, QueueSpec, Transport

SKIPPED = "agentbus.skipped"
_SKIPPED_PREFIX = b'{"' + SKIPPED.encode() + b'"'


class RecordingError(AgentbusError):
    """A recording cannot be read: names the file, the line and the reason."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    line: int
    raw: bytes
    event: Event[Any]


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """A message the recorder met that was not an event of the catalog, and why."""

    line: int
    reason: str
    detail: str


@dataclass
class Recording:
    events: list[RecordedEvent] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)


def read_recording(path: Path, codec: EventCodec) -> list[RecordedEvent]:
    """Every event of the file, validated; skipped entries are passed over; the first bad
    line raises `RecordingError`."""
    return scan_recording(path, codec).events


def scan_recording(path: Path, codec: EventCodec) -> Recording:
    """The file's events and skipped entries; the first bad line raises `RecordingError`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"{path}: {exc.strerror or exc}") from None
    recording = Recording()
    with handle:
        for entry in _parse(path, handle, codec):
            if isinstance(entry, SkippedEntry):
                recording.skipped.append(entry)
            else:
                recording.events.append(entry)
    return recording


def _parse(
    path: Path, handle: IO[bytes], codec: EventCodec
) -> Iterator[RecordedEvent | SkippedEntry]:
    for number, line in enumerate(handle, start=1):
        raw = line.strip()
        if not raw:
            continue
        if raw.startswith(_SKIPPED_PREFIX):
            skipped = _skipped_entry(number, raw)
            if skipped is not None:
                yield skipped
                continue
        try:
            event = codec.decode(raw)
        except MalformedEvent as exc:
            raise RecordingError(f"{path}:{number}: {exc.code}: {exc.detail}") from None
        yield RecordedEvent(number, raw, event)


def _skipped_entry(number: int, raw: bytes) -> SkippedEntry | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    entry = value.get(SKIPPED) if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(entry, dict) or not isinstance(entry.get("reason"), str):
        return None
    return SkippedEntry(number, entry["reason"], str(entry.get("detail") or ""))


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
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if b"\n" in body or b"\r" in body:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return body.strip()


def recorded_line(
    message: Message, codec: EventCodec, header_prefix: str
) -> tuple[bytes, str | None]:
    """The recording's line for a message, and None or the reason it was skipped: the
    event in structured form, or a skipped entry saying why it is no event of the catalog."""
    try:
        codec.decode(
            message.body,
            content_type=message.content_type,
            message_type=message.type,
            headers=message.headers,
            header_prefix=header_prefix,
        )
    except MalformedEvent as exc:
        return skipped_line(message, exc.code, exc.detail, max_body=codec.max_bytes), exc.code
    body = message.body
    if is_binary(message.content_type, message.headers, header_prefix):
        body = to_structured(
            body,
            content_type=message.content_type,
            headers=message.headers,
            header_prefix=header_prefix,
        )
    line = as_line(body)
    if line is None:  # a valid event is one JSON object: never, but never a bad line either
        return skipped_line(
            message, "malformed_json", "", max_body=codec.max_bytes
        ), "malformed_json"
    return line, None


def skipped_line(message: Message, reason: str, detail: str, *, max_body: int) -> bytes:
    entry: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "routing_key": message.routing_key,
        "content_type": message.content_type,
        "message_id": message.message_id,
        "type": message.type,
        "headers": {name: _plain(value) for name, value in message.headers.items()},
    }
    if len(message.body) <= max_body:
        entry["body_base64"] = base64.b64encode(message.body).decode("ascii")
    else:
        entry["body_bytes"] = len(message.body)
    return json.dumps({SKIPPED: entry}, separators=(",", ":"), default=str).encode()


def _plain(value: Any) -> Any:
    """An AMQP header value as JSON can hold it."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class RecordSummary:
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class _DurableLines:
    """Lines written at once, their deliveries acked only once the file holds them.

    A delivery is acked after an fsync that began after its line was written, so a
    recorder killed at any moment (or a machine that loses power) has acked nothing
    the file lacks; what it wrote but had not acked comes again and is written twice,
    which readers take as the duplicate it is (the same event id). One fsync covers
    every line written while the last one ran: group commit, as a service's inbox.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._syncable = _is_regular_file(out)
        self._unsynced: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._closing = False

    def write(self, line: bytes, delivery: Delivery) -> None:
        self._out.write(line + b"\n")
        # Out of our buffer before anything else: a reader of the file sees it now.
        self._out.flush()
        self._unsynced.append(delivery)
        self._arrived.set()

    async def run(self) -> None:
        """Sync and ack until `close`, then once more for whatever came last."""
        while True:
            await self._arrived.wait()
            await self._sync()
            if self._closing:
                return

    def close(self) -> None:
        self._closing = True
        self._arrived.set()

    async def _sync(self) -> None:
        self._arrived.clear()
        batch, self._unsynced = self._unsynced, []
        if batch:
            if self._syncable:
                await asyncio.to_thread(os.fsync, self._out.fileno())
            for delivery in batch:
                # A closed channel: the broker delivers it again, and it is written twice.
                with contextlib.suppress(BrokerUnavailable):
                    await delivery.ack()


def _is_regular_file(out: IO[bytes]) -> bool:
    """Whether fsync means anything for `out` (a pipe or a buffer in memory cannot)."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


async def record(
    transport: Transport,
    codec: EventCodec,
    out: IO[bytes],
    *,
    stop: asyncio.Event,
    pattern: str = "#",
    limit: int | None = None,
    queue: str | None = None,
    queue_kind: QueueKind = "quorum",
    on_message: Callable[[RecordSummary], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> RecordSummary:
    """Write every message published on the exchange until `stop` is set or `limit` events
    are written: events in structured form, anything else as a skipped entry.

    Without `queue` the recorder reads a private queue that lives as long as its
    connection. With it, a durable queue of that name: what is published while the
    recorder is down (killed, or the broker restarting) waits there for the next one,
    so a recording appended to across restarts loses nothing (and may hold an event
    twice, under one id).
    """
    if queue is None:
        name = f"agentbus.record.{uuid.uuid4().hex[:12]}"
        spec = QueueSpec(name=name, bindings=(pattern,), kind="classic", transient=True)
    else:
        name = queue
        spec = QueueSpec(name=name, bindings=(pattern,), kind=queue_kind)
    await transport.declare([spec])
    prefix = transport.broker_info.header_prefix
    summary = RecordSummary()
    lines = _DurableLines(out)

    async def on_delivery(delivery: Delivery) -> None:
        if limit is not None and summary.written >= limit:
            return
        line, skipped = recorded_line(delivery.message, codec, prefix)
        lines.write(line, delivery)
        if skipped is None:
            summary.written += 1
        else:
            summary.skipped[skipped] += 1
        if on_message is not None:
            on_message(summary)
        if limit is not None and summary.written >= limit:
            stop.set()

    syncing = asyncio.create_task(lines.run())
    try:
        subscription = await transport.consume(name, on_delivery, prefetch=256)
        if on_ready is not None:
            on_ready(name)
        try:
            await stop.wait()
        finally:
            await subscription.cancel()
    finally:
        lines.close()
        await syncing
    return summary
