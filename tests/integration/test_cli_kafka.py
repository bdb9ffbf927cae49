"""The dead-letter commands over a real Kafka broker, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest

from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.transport.kafka import KafkaTransport
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import KafkaHarness
from tests.integration.test_cli_broker import agentbus, finish

pytestmark = pytest.mark.kafka


async def dead_letters(transport: KafkaTransport, queue: str, count: int) -> None:
    for _ in range(150):
        if await transport.depth(f"{queue}.dlq") == count:
            return
        await asyncio.sleep(0.1)
    assert await transport.depth(f"{queue}.dlq") == count


async def test_dead_letters_listed_and_redriven_through_the_cli_on_kafka(
    kafka: KafkaHarness,
) -> None:
    queue = f"echo-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGENTBUS_KAFKA_PREFIX": kafka.prefix,
        "AGENTBUS_APP": "tests.integration.cli_apps:make_echo",
        "TEST_ECHO_QUEUE": queue,
    }
    env.pop("AMQP_URL", None)
    runner = await agentbus("run", "echo", env=env)
    try:
        assert runner.stderr is not None
        # The client library may log (a topic just made, not yet in its metadata) first.
        seen: list[bytes] = []
        while not seen or b"running echo" not in seen[-1]:
            line = await asyncio.wait_for(runner.stderr.readline(), 60)
            assert line, b"".join(seen)
            seen.append(line)
        transport = kafka.connect()
        assert isinstance(transport, KafkaTransport)
        await transport.start()
        bad = sample("order.created", "bad-1", 1)
        await Bus(transport, EventCodec(CATALOG)).publish_many(
            [sample("order.created", "fine", 0), bad]
        )
        await dead_letters(transport, queue, 1)

        code, out, err = await finish(await agentbus("dlq", "list", "--json", env=env))
        assert code == 0, err
        [letter] = json.loads(out)
        assert (letter["event_id"], letter["error_code"], letter["queue"]) == (
            bad.id,
            "refused",
            queue,
        )

        code, out, err = await finish(await agentbus("dlq", "redrive", queue, env=env))
        assert code == 0, err
        assert "redrove 1" in out
        # Refused again, it is a dead letter again: the redrive reached the service.
        await dead_letters(transport, queue, 1)
        code, out, err = await finish(await agentbus("dlq", "list", "--json", env=env))
        assert code == 0, err
        [again] = json.loads(out)
        assert again["event_id"] == bad.id
    finally:
        if runner.returncode is None:
            runner.terminate()
        code, _, err = await finish(runner)
    assert code == 0, err
