"""A recording taken with `agentbus record` from a live run over RabbitMQ replays offline
to the same suggestions."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.recording import read_recording
from agentbus.transport.rabbitmq import RabbitTransport
from agents.registry import restock_agent
from evals.replay import OBSERVER, SERVICES, replay
from evals.scenarios import Item, Scenario, steady
from evals.simulate import ScenarioActors
from events import CATALOG, StockReceived
from tests.integration.chaos import ServiceProcess, exclusive_queues, queue_counts, queue_names
from tests.support.broker import delete_queues

pytestmark = pytest.mark.rabbitmq

LIVE = Scenario(
    "live",
    "three weeks of steady demand, a reviewer and a supplier answering",
    (Item("LIVE-A", steady(8), lead_time_days=2, reorder_point=30, max_stock=100),),
    days=21,
    seed=31,
)


async def delete_replay_queues(amqp_url: str) -> None:
    names = [
        name
        for name in await queue_names()
        if name == OBSERVER or any(name == s or name.startswith(f"{s}.") for s in SERVICES)
    ]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def test_a_live_recording_replays_offline_to_the_same_suggestions(
    amqp_url: str, tmp_path: Path
) -> None:
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    recording = tmp_path / "live.jsonl"
    env = {**os.environ, "AMQP_URL": amqp_url, "AGENTBUS_EXCHANGE": exchange}
    async with exclusive_queues():
        await delete_replay_queues(amqp_url)
        recorder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "record",
            "--out",
            str(recording),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert recorder.stderr is not None
            line = await asyncio.wait_for(recorder.stderr.readline(), 60)
            assert b"recording" in line, line
            transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="live")
            live = await replay(
                LIVE.inputs(),
                restock_agent,
                actors=ScenarioActors(LIVE),
                data_dir=tmp_path / "live",
                transport=transport,
            )
            await asyncio.sleep(1.0)  # let the recorder take the last events off its queue
        finally:
            recorder.send_signal(signal.SIGINT)
            await asyncio.wait_for(recorder.wait(), 60)
            await delete_replay_queues(amqp_url)
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                await (await connection.channel()).exchange_delete(exchange)
    events = [r.event for r in read_recording(recording, EventCodec(CATALOG))]
    assert {e.id for e in events} == {e.id for e in live.events}

    offline = await replay(events, restock_agent, data_dir=tmp_path / "offline")

    def made(stream: list[object]) -> list[tuple[str, str, int, str]]:
        return sorted(
            (e.id, e.data.sku, e.data.quantity, e.data.rationale)  # type: ignore[attr-defined]
            for e in stream
            if e.type == "restock.recommended"  # type: ignore[attr-defined]
        )

    live_suggestions = made(list(live.events))
    assert len(live_suggestions) >= 2
    assert made(list(offline.events)) == live_suggestions


RECORDER_QUEUE = "test.record.durable"


async def test_a_recorder_on_a_durable_queue_killed_mid_stream_loses_nothing(
    amqp_url: str, tmp_path: Path
) -> None:
    """SIGKILLed while it writes, the recorder has acked only lines the file holds; what
    is published while it is down waits in its queue; started again it appends the rest.
    Lines written but not acked come again: duplicates under one id, never a gap."""
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    recording = tmp_path / "killed.jsonl"
    env = {**os.environ, "AMQP_URL": amqp_url, "AGENTBUS_EXCHANGE": exchange}
    command = ("record", "--out", str(recording), "--queue", RECORDER_QUEUE)
    recorder = ServiceProcess("recorder", env, command=command, ready="recording ")
    events = [received(n) for n in range(3000)]
    transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
    async with exclusive_queues():
        await delete_queues(amqp_url, [RECORDER_QUEUE])
        try:
            await recorder.start()
            await transport.start()
            bus = Bus(transport, EventCodec(CATALOG))
            await bus.publish_many(events[:1500])
            # Killed once it has written some of them: with lines in hand, surely.
            for _ in range(6000):
                if recording.exists() and recording.stat().st_size >= 50_000:
                    break
                await asyncio.sleep(0.01)
            await recorder.kill()
            written_when_killed = len(recording.read_bytes().splitlines())
            await bus.publish_many(events[1500:])
            await recorder.start()

            async def drained() -> bool:
                counts = await queue_counts(amqp_url, [RECORDER_QUEUE])
                return counts.get(RECORDER_QUEUE, (1, 0))[0] == 0

            for _ in range(600):
                if await drained():
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # the last lines synced and acked
            assert await recorder.stop() == 0
        finally:
            await recorder.stop()
            await transport.close()
            await delete_queues(amqp_url, [RECORDER_QUEUE])
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                await (await connection.channel()).exchange_delete(exchange)
    assert 0 < written_when_killed < len(events), "killed mid-stream"
    ids = [r.event.id for r in read_recording(recording, EventCodec(CATALOG))]
    assert set(ids) == {e.id for e in events}
    # In order, but for the copies a restart writes again.
    firsts = list(dict.fromkeys(ids))
    assert firsts == [e.id for e in events]


def received(n: int) -> Event[Any]:
    return new_event(
        StockReceived(sku=f"SKU-{n % 7}", quantity=1 + n % 5, purchase_order_id=None),
        source="/test",
        id=f"received-{n}",
    )
