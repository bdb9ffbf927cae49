"""Recordings of whatever the exchange carries: events in structured form whoever produced
them, anything else as a skipped entry with its reason, and a publish of the file that
replays exactly the valid events."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.envelope import CONTENT_TYPE, Event, EventCodec
from agentbus.recording import (
    SKIPPED,
    RecordingError,
    RecordSummary,
    publish_recording,
    read_recording,
    record,
    scan_recording,
)
from agentbus.transport.base import Message, Transport
from agentbus.transport.memory import InMemoryBroker
from tests.contract.catalog import CATALOG, sample
from tests.support import cloudevents_sdk

codec = EventCodec(CATALOG)


def mixed_stream() -> tuple[list[Message], list[str]]:
    """Messages of every kind, and the ids of the valid events among them, in order."""
    structured = [sample("order.created", f"s-{n}", n) for n in range(3)]
    in_binary = [sample("stock.received", f"b-{n}", n) for n in range(3)]
    via_sdk = sample("inventory.low", "sdk", 7)
    messages = [
        ours(structured[0]),
        cloudevents_sdk.binary(in_binary[0], message_id="random-1"),
        Message(b"plain text, no event", "order.created", content_type="text/plain"),
        cloudevents_sdk.structured(via_sdk),
        ours(structured[1]),
        # A CloudEvent of a type the catalog does not know, in binary mode.
        cloudevents_sdk.binary(sample("order.created", "x", 1), message_id="random-2"),
        cloudevents_sdk.binary(in_binary[1]),
        # Binary mode whose data fails validation.
        Message(
            b'{"key": "bad"}',
            "stock.received",
            content_type="application/json",
            headers=dict(cloudevents_sdk.binary(in_binary[2]).headers),
        ),
        Message(b"\x00\xff", "order.created", content_type=None),
        ours(structured[2]),
        # Multi-line data in binary mode still makes one line of the recording.
        Message(
            b'{\n "key": "b-2",\n "seq": 2\n}\n',
            "stock.received",
            content_type="application/json",
            headers=dict(cloudevents_sdk.binary(in_binary[2]).headers),
        ),
    ]
    unknown = messages[5]
    messages[5] = Message(
        unknown.body,
        "order.exploded",
        content_type=unknown.content_type,
        headers={**unknown.headers, "ce-type": "order.exploded"},
    )
    valid = [
        structured[0].id,
        in_binary[0].id,
        via_sdk.id,
        structured[1].id,
        in_binary[1].id,
        structured[2].id,
        in_binary[2].id,
    ]
    return messages, valid


def ours(event: Event[Any]) -> Message:
    """As agentbus publishes it: structured, with the contract's properties."""
    return Message(
        codec.encode(event),
        event.type,
        message_id=event.id,
        type=event.type,
        content_type=CONTENT_TYPE,
    )


async def record_while(
    send: Callable[[Transport], Awaitable[object]],
) -> tuple[bytes, RecordSummary, object]:
    """Record the in-process exchange while `send` publishes on it."""
    transport = InMemoryBroker().connect()
    await transport.start()
    out = io.BytesIO()
    stop = asyncio.Event()
    ready = asyncio.Event()
    recorder = asyncio.create_task(
        record(transport, codec, out, stop=stop, on_ready=lambda _: ready.set())
    )
    await ready.wait()
    sent = await send(transport)
    for _ in range(200):
        await asyncio.sleep(0)
    stop.set()
    summary = await recorder
    await transport.close()
    return out.getvalue(), summary, sent


async def record_stream(messages: list[Message]) -> tuple[bytes, RecordSummary]:
    written, summary, _ = await record_while(lambda transport: transport.publish_many(messages))
    return written, summary


async def test_a_mixed_stream_records_its_events_and_skips_the_rest(tmp_path: Path) -> None:
    messages, valid = mixed_stream()
    written, summary = await record_stream(messages)
    lines = written.splitlines()
    assert len(lines) == len(messages), "one line per message, none lost"
    assert summary.written == len(valid)
    assert summary.skipped == {
        "wrong_content_type": 2,
        "unknown_type": 1,
        "invalid_data": 1,
    }
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(written)
    recording = scan_recording(path, codec)
    assert [r.event.id for r in recording.events] == valid
    assert sorted(entry.reason for entry in recording.skipped) == sorted(summary.skipped.elements())
    assert [r.event.id for r in read_recording(path, codec)] == valid
    for line in lines:
        value = json.loads(line)
        if SKIPPED in value:
            continue
        # Every event line is a structured CloudEvent the official SDK reads as such.
        parsed = cloudevents_sdk.parse(
            Message(line, value["type"], content_type=CONTENT_TYPE, headers={})
        )
        assert parsed.get_id() == value["id"]


async def test_a_skipped_entry_keeps_the_message_and_its_reason() -> None:
    junk = Message(
        b"plain text",
        "order.created",
        message_id="m-1",
        content_type="text/plain",
        headers={"x-raw": b"\xff", "n": 3},
    )
    written, _ = await record_stream([junk])
    [entry] = [json.loads(line)[SKIPPED] for line in written.splitlines()]
    assert entry["reason"] == "wrong_content_type"
    assert entry["detail"]
    assert base64.b64decode(entry["body_base64"]) == b"plain text"
    assert (entry["routing_key"], entry["message_id"], entry["content_type"]) == (
        "order.created",
        "m-1",
        "text/plain",
    )
    assert entry["headers"]["n"] == 3


async def test_publishing_a_recording_replays_exactly_its_valid_events(tmp_path: Path) -> None:
    messages, valid = mixed_stream()
    written, _ = await record_stream(messages)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(written)

    again, summary, published = await record_while(
        lambda transport: publish_recording(Bus(transport, codec), read_recording(path, codec))
    )
    assert published == len(valid)
    assert summary.written == len(valid)
    assert not summary.skipped
    replayed = [json.loads(line) for line in again.splitlines()]
    assert [event["id"] for event in replayed] == valid
    # The events go out exactly as recorded, byte for byte.
    events_in_file = [line for line in written.splitlines() if not line.startswith(b'{"agentbus')]
    assert again.splitlines() == events_in_file


@pytest.mark.parametrize(
    "bad",
    [
        b'{"agentbus.skipped": {"detail": "no reason"}}',
        b'{"agentbus.skipped": {"reason": "x"}, "id": "smuggled"}',
        b'{"specversion": "1.0"}',
    ],
)
def test_a_line_that_is_neither_an_event_nor_a_skipped_entry_is_refused(
    tmp_path: Path, bad: bytes
) -> None:
    good = codec.encode(sample("order.created", "k", 1))
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(RecordingError, match=r"bad\.jsonl:2"):
        scan_recording(path, codec)


async def test_a_line_is_acked_only_once_an_fsync_begun_after_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability cannot be watched from a test, but its order can: the real fsync and ack
    run, and each ack must come after an fsync that began with the line in the file."""
    from agentbus import recording as recording_module
    from agentbus.transport import memory

    synced = 0  # bytes of the file when the last fsync began
    fsync = os.fsync

    def watched_fsync(fd: int) -> None:
        nonlocal synced
        size = os.fstat(fd).st_size
        fsync(fd)
        synced = max(synced, size)

    acked_at: dict[str, int] = {}  # event id -> bytes synced when it was acked
    ack = memory._MemoryDelivery.ack

    async def watched_ack(self: Any, *, multiple: bool = False) -> None:
        acked_at[str(self.message.message_id)] = synced
        await ack(self, multiple=multiple)

    monkeypatch.setattr(recording_module.os, "fsync", watched_fsync)
    monkeypatch.setattr(memory._MemoryDelivery, "ack", watched_ack)
    path = tmp_path / "synced.jsonl"
    events = [sample("order.created", f"k-{n % 5}", n) for n in range(600)]
    transport = InMemoryBroker().connect()
    await transport.start()
    stop = asyncio.Event()
    ready = asyncio.Event()
    with path.open("wb") as out:
        recorder = asyncio.create_task(
            record(transport, codec, out, stop=stop, on_ready=lambda _: ready.set())
        )
        await ready.wait()
        await Bus(transport, codec).publish_many(events)
        for _ in range(1000):
            if len(acked_at) == len(events):
                break
            await asyncio.sleep(0.01)
        stop.set()
        await recorder
    await transport.close()
    written = path.read_bytes()
    assert len(acked_at) == len(events)
    for event in events:
        end = written.index(b"\n", written.index(f'"id":"{event.id}"'.encode())) + 1
        assert acked_at[event.id] >= end, "acked before its line was synced"
