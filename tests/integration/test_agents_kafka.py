"""The agents, unchanged, over a real Kafka broker: `agentbus run memory restock-agent`
and `agentbus record` as processes with KAFKA_BOOTSTRAP_SERVERS set instead of AMQP_URL.
The model is the offline policy: what is under test is the transport under the agents."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec
from agentbus.recording import read_recording
from agentbus.transport.kafka import KafkaTransport
from events import CATALOG
from tests.contract.harness import KafkaHarness
from tests.integration.test_cli_broker import finish
from tests.support.broker import low, product

pytestmark = pytest.mark.kafka


async def started(env: dict[str, str], *args: str, ready: bytes) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentbus",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen: list[bytes] = []
    while not seen or ready not in seen[-1]:
        line = await asyncio.wait_for(process.stderr.readline(), 90)
        assert line, b"".join(seen)
        seen.append(line)
    return process


async def test_the_restock_agent_and_the_recorder_work_unchanged_over_kafka(
    kafka: KafkaHarness, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGENTBUS_KAFKA_PREFIX": kafka.prefix,
        "AGENTBUS_DATA": str(tmp_path / "agents"),
        "AGENTBUS_MODEL": "policy",
        "AGENTBUS_EMBEDDINGS": "hashing",
    }
    env.pop("AMQP_URL", None)
    env.pop("OPENAI_API_KEY", None)
    recording = tmp_path / "kafka.jsonl"
    recorder = await started(env, "record", "--out", str(recording), ready=b"recording")
    agents = await started(env, "run", "memory", "restock-agent", ready=b"running")
    transport = KafkaTransport(kafka.bootstrap, prefix=kafka.prefix, event_types=list(CATALOG))
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    triggers = [low("K-AGENT-A"), low("K-AGENT-B")]
    try:
        await bus.publish_many([product("K-AGENT-A"), product("K-AGENT-B")])
        await asyncio.sleep(1.0)
        await bus.publish_many(triggers)
        await bus.publish_many(triggers)  # a producer's retry: changes nothing
        suggestions: list[Event[Any]] = []
        for _ in range(120):
            if recording.exists():
                events = [r.event for r in read_recording(recording, bus.codec)]
                suggestions = [e for e in events if e.type == "restock.recommended"]
                if len(suggestions) >= 2:
                    break
            await asyncio.sleep(1)
        assert len(suggestions) >= 2, "each suggestion is in the file while the recorder runs"
        # The recorder writes each event before it acks it: a second suggestion for a
        # trigger would be in the file by now.
        await asyncio.sleep(3.0)
    finally:
        await transport.close()
        for process in (agents, recorder):
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        codes = [await finish(p) for p in (agents, recorder)]
    assert [code for code, _, _ in codes] == [0, 0], codes
    events = [r.event for r in read_recording(recording, bus.codec)]
    suggestions = [e for e in events if e.type == "restock.recommended"]
    assert sorted(str(s.data.trigger_event_id) for s in suggestions) == sorted(
        t.id for t in triggers
    )
    assert {s.data.model for s in suggestions} == {"policy"}
    assert all(s.data.quantity > 0 for s in suggestions)
    # The recorder kept every distinct event it saw, the agent's among them.
    assert {t.id for t in triggers} <= {e.id for e in events}
