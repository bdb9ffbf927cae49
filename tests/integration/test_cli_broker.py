"""The CLI over a real broker: record then publish reproduces the events; dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.transport.rabbitmq import RabbitTransport
from tests.contract.catalog import CATALOG, TYPES, sample

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def exchange(amqp_url: str) -> AsyncIterator[str]:
    name = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    yield name
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)


def cli_env(amqp_url: str, exchange: str) -> dict[str, str]:
    return {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_APP": "tests.contract.app:app",
    }


async def agentbus(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentbus",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def start_recorder(out: Path, count: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await agentbus("record", "--out", str(out), "--count", str(count), env=env)
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), 30)
    assert b"recording" in line, line
    return process


async def finish(process: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def essence(path: Path) -> list[tuple[Any, ...]]:
    rows = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        rows.append((event["id"], event["type"], event.get("subject"), event["data"]))
    return rows


async def test_record_then_publish_reproduces_the_events(
    amqp_url: str, exchange: str, tmp_path: Path
) -> None:
    env = cli_env(amqp_url, exchange)
    first = tmp_path / "first.jsonl"
    events = [sample(TYPES[n % len(TYPES)], f"key-{n % 7}", n) for n in range(60)]
    recorder = await start_recorder(first, len(events), env)

    transport = RabbitTransport(amqp_url, exchange=exchange)
    await transport.start()
    try:
        await Bus(transport, EventCodec(CATALOG)).publish_many(events)
    finally:
        await transport.close()
    code, _, err = await finish(recorder)
    assert code == 0, err
    recorded = essence(first)
    assert recorded == [(e.id, e.type, e.subject, e.data.model_dump(mode="json")) for e in events]

    second = tmp_path / "second.jsonl"
    recorder = await start_recorder(second, len(events), env)
    publisher = await agentbus("publish", str(first), env=env)
    code, _, err = await finish(publisher)
    assert code == 0, err
    assert "published 60" in err
    code, _, err = await finish(recorder)
    assert code == 0, err
    assert essence(second) == recorded
    assert second.read_bytes() == first.read_bytes()


async def test_publish_refuses_a_malformed_file_whole(
    amqp_url: str, exchange: str, tmp_path: Path
) -> None:
    env = cli_env(amqp_url, exchange)
    bad = tmp_path / "bad.jsonl"
    good = EventCodec(CATALOG).encode(sample("order.created", "k", 1)).decode()
    bad.write_text(good + "\n" + '{"specversion": "1.0"}\n')
    process = await agentbus("publish", str(bad), env=env)
    code, _, err = await finish(process)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "bad.jsonl:2" in lines[0]
    assert "missing_attribute" in lines[0]
    assert "Traceback" not in err


async def test_dead_letters_listed_and_redriven_through_the_cli(
    amqp_url: str, exchange: str
) -> None:
    env = cli_env(amqp_url, exchange)
    queue = f"echo-{uuid.uuid4().hex[:8]}"
    # Run the service under a unique queue name, through a one-off application.
    env["AGENTBUS_APP"] = "tests.integration.cli_apps:make_echo"
    env["TEST_ECHO_QUEUE"] = queue
    runner = await agentbus("run", "echo", env=env)
    try:
        assert runner.stderr is not None
        line = await asyncio.wait_for(runner.stderr.readline(), 30)
        assert b"running echo" in line, line
        transport = RabbitTransport(amqp_url, exchange=exchange)
        await transport.start()
        bad = sample("order.created", "bad-1", 1)
        await Bus(transport, EventCodec(CATALOG)).publish_many(
            [sample("order.created", "fine", 0), bad]
        )
        for _ in range(100):
            if await transport.depth(f"{queue}.dlq") == 1:
                break
            await asyncio.sleep(0.1)
        listing = await agentbus("dlq", "list", "--json", env=env)
        code, out, err = await finish(listing)
        assert code == 0, err
        [letter] = json.loads(out)
        assert letter["event_id"] == bad.id
        assert letter["error_code"] == "refused"
        assert letter["attempts"] == 1
        assert letter["queue"] == queue
        assert "bad-1" in letter["detail"]

        explained = await agentbus("explain", bad.id, "--json", env=env)
        code, out, err = await finish(explained)
        assert code == 0, err
        fate = json.loads(out)
        assert fate["event_id"] == bad.id
        [where] = fate["dead_letters"]
        assert (where["queue"], where["error_code"]) == (queue, "refused")
        assert fate["applied_by"] == []

        redrive = await agentbus("dlq", "redrive", queue, env=env)
        code, out, err = await finish(redrive)
        assert code == 0, err
        assert "redrove 1" in out
        # Refused again, it is back in the DLQ: the redrive really reached the service.
        for _ in range(100):
            if await transport.depth(f"{queue}.dlq") == 1:
                break
            await asyncio.sleep(0.1)
        assert await transport.depth(f"{queue}.dlq") == 1
        for name in (queue, f"{queue}.dlq"):
            await transport.delete_queue(name)
        await transport.close()
    finally:
        if runner.returncode is None:
            runner.terminate()
        code, _, err = await finish(runner)
    assert code == 0, err
    assert "stopped" in err
