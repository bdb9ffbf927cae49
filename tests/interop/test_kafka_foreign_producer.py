"""A producer nobody here wrote, over a real Kafka broker.

Another stack uses the official CloudEvents SDK's Kafka binding and a plain aiokafka
producer: binary mode (`ce_*` headers, the data as the value) and structured mode
(one JSON CloudEvent as the value), keyed as that SDK keys them. The shop's real
inventory service, run by `agentbus run` with KAFKA_BOOTSTRAP_SERVERS, must apply
both, refuse what breaks a rule under the event's own id and type, and keep serving
after a record that is not a CloudEvent at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import kafka as ce_kafka

from agentbus.envelope import Event, new_event
from events import InventoryAdjusted, StockReceived
from tests.contract.harness import KafkaHarness
from tests.integration.test_cli_broker import agentbus, finish
from tests.interop.test_cloudevents_sdk import product
from tests.support.cloudevents_sdk import sdk_event

pytestmark = pytest.mark.kafka


def record(event: Event[Any], *, binary: bool) -> ce_kafka.KafkaMessage:
    made = sdk_event(event)
    return ce_kafka.to_binary_event(made) if binary else ce_kafka.to_structured_event(made)


async def letters(env: dict[str, str], count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(60):
        code, out, err = await finish(await agentbus("dlq", "list", "--json", env=env))
        assert code == 0, err
        found = json.loads(out)
        if len(found) >= count:
            return found
        await asyncio.sleep(1)
    return found


async def test_inventory_applies_sdk_records_in_both_modes_from_a_plain_kafka_client(
    kafka: KafkaHarness, tmp_path: Path
) -> None:
    queue = f"inventory-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGENTBUS_KAFKA_PREFIX": kafka.prefix,
        "AGENTBUS_DATA": str(tmp_path),
        "AGENTBUS_APP": "tests.integration.cli_apps:make_inventory",
        "TEST_INVENTORY_QUEUE": queue,
    }
    env.pop("AMQP_URL", None)
    binary_refused = new_event(
        InventoryAdjusted(sku="K-BIN", delta=-100, reason="count"), source="/elsewhere"
    )
    structured_refused = new_event(
        InventoryAdjusted(sku="K-STR", delta=-100, reason="count"), source="/elsewhere"
    )
    stream = [
        (product("K-BIN"), True),
        (new_event(StockReceived(sku="K-BIN", quantity=7), source="/x"), True),
        (product("K-STR"), False),
        (new_event(StockReceived(sku="K-STR", quantity=5), source="/x"), False),
        (binary_refused, True),
        (structured_refused, False),
    ]
    runner = await agentbus("run", "inventory", env=env)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        assert runner.stderr is not None
        seen: list[bytes] = []
        while not seen or b"running inventory" not in seen[-1]:
            line = await asyncio.wait_for(runner.stderr.readline(), 60)
            assert line, b"".join(seen)
            seen.append(line)
        await producer.start()
        for event, binary in stream:
            made = record(event, binary=binary)
            key = made.key.encode() if isinstance(made.key, str) else made.key
            await producer.send_and_wait(
                f"{kafka.prefix}{event.type}",
                made.value,
                key=key or (event.subject or event.id).encode(),
                headers=list(made.headers.items()),
            )
        # Not a CloudEvent at all: refused with its own reason, and the service goes on.
        await producer.send_and_wait(
            f"{kafka.prefix}stock.received", b"\x00not json", key=b"K-BIN", headers=[]
        )
        after = record(new_event(StockReceived(sku="K-BIN", quantity=3), source="/x"), binary=True)
        await producer.send_and_wait(
            f"{kafka.prefix}stock.received",
            after.value,
            key=b"K-BIN",
            headers=list(after.headers.items()),
        )

        refused = await letters(env, 3)
        by_id = {letter["event_id"]: letter for letter in refused if letter["event_id"]}
        assert set(by_id) >= {binary_refused.id, structured_refused.id}, refused
        for event in (binary_refused, structured_refused):
            letter = by_id[event.id]
            assert (letter["type"], letter["error_code"]) == (
                "inventory.adjusted",
                "negative_stock",
            )
        malformed = [letter for letter in refused if letter["event_id"] not in by_id]
        assert len(malformed) == 1, refused
        assert malformed[0]["error_code"] != "negative_stock"

        stock: dict[str, Any] = {}
        for _ in range(60):
            code, out, err = await finish(await agentbus("state", "inventory", "--json", env=env))
            assert code == 0, err
            stock = json.loads(out)
            if stock.get("K-BIN", {}).get("on_hand") == 10:
                break
            await asyncio.sleep(1)
        assert stock["K-BIN"]["on_hand"] == 7 + 3, "the record after the malformed one applied"
        assert stock["K-STR"]["on_hand"] == 5
    finally:
        await producer.stop()
        if runner.returncode is None:
            runner.terminate()
        code, _, err = await finish(runner)
    assert code == 0, err
