"""Clients nobody here wrote, over a real RabbitMQ.

A producer in another stack uses the official CloudEvents SDK (PyPI `cloudevents`) and
a plain AMQP client (aio-pika, no agentbus), which sets no message id: aiormq fills in a
random one. The shop's real inventory service, run by `agentbus run`, must apply what it
sends in binary mode (the SDK's RabbitMQ default) and in structured mode alike, refuse
what breaks a rule under the event's own id and type, and `agentbus explain` must find
the refused event. The SDK must read what agentbus publishes, and a recording of a mixed
stream must publish back exactly its valid events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.retry import RetryPolicy, topology
from agentbus.transport.base import Message
from agentbus.transport.rabbitmq import RabbitTransport
from events import CATALOG, InventoryAdjusted, ProductUpserted, StockReceived
from tests.integration.test_cli_broker import agentbus, finish
from tests.support import cloudevents_sdk
from tests.unit.test_catalog import EXAMPLES

pytestmark = pytest.mark.rabbitmq

codec = EventCodec(CATALOG)


@pytest.fixture
async def exchange(amqp_url: str) -> AsyncIterator[str]:
    name = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    yield name
    async with await aio_pika.connect(amqp_url) as connection:
        await (await connection.channel()).exchange_delete(name)


async def send_plainly(amqp_url: str, exchange: str, messages: list[Message]) -> None:
    """Publish as a client that is not agentbus: aio-pika alone, no message id set."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange)
        for message in messages:
            await target.publish(
                aio_pika.Message(
                    message.body,
                    content_type=message.content_type,
                    headers=dict(message.headers),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=message.routing_key,
            )


def product(sku: str) -> Event[Any]:
    return new_event(
        ProductUpserted(
            sku=sku,
            name=f"Product {sku}",
            description="From another stack.",
            category="kitchen",
            unit_cost=4,
            unit_price=9.5,
            lead_time_days=2,
            reorder_point=1,
            max_stock=100,
            supplier="acme",
        ),
        source="/elsewhere",
    )


async def test_inventory_applies_sdk_events_in_both_modes_and_names_refusals_by_event(
    amqp_url: str, exchange: str, tmp_path: Path
) -> None:
    queue = f"inventory-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_DATA": str(tmp_path),
        "AGENTBUS_APP": "tests.integration.cli_apps:make_inventory",
        "TEST_INVENTORY_QUEUE": queue,
    }
    binary_refused = new_event(
        InventoryAdjusted(sku="SDK-BIN", delta=-100, reason="count"), source="/elsewhere"
    )
    structured_refused = new_event(
        InventoryAdjusted(sku="SDK-STR", delta=-100, reason="count"), source="/elsewhere"
    )
    stream = [
        cloudevents_sdk.binary(product("SDK-BIN")),
        cloudevents_sdk.binary(new_event(StockReceived(sku="SDK-BIN", quantity=7), source="/x")),
        cloudevents_sdk.structured(product("SDK-STR")),
        cloudevents_sdk.structured(
            new_event(StockReceived(sku="SDK-STR", quantity=5), source="/x")
        ),
        cloudevents_sdk.binary(binary_refused),
        cloudevents_sdk.structured(structured_refused),
    ]
    assert all(m.message_id is None for m in stream)
    runner = await agentbus("run", "inventory", env=env)
    transport = RabbitTransport(amqp_url, exchange=exchange)
    try:
        assert runner.stderr is not None
        line = await asyncio.wait_for(runner.stderr.readline(), 60)
        assert b"running inventory" in line, line
        await send_plainly(amqp_url, exchange, stream)
        await transport.start()
        for _ in range(300):
            if await transport.depth(f"{queue}.dlq") == 2:
                break
            await asyncio.sleep(0.1)

        state = await agentbus("state", "inventory", "--json", env=env)
        code, out, err = await finish(state)
        assert code == 0, err
        stock = json.loads(out)
        assert stock["SDK-BIN"]["on_hand"] == 7
        assert stock["SDK-STR"]["on_hand"] == 5

        listing = await agentbus("dlq", "list", "--json", env=env)
        code, out, err = await finish(listing)
        assert code == 0, err
        letters = {letter["event_id"]: letter for letter in json.loads(out)}
        assert set(letters) == {binary_refused.id, structured_refused.id}
        for letter in letters.values():
            assert letter["type"] == "inventory.adjusted"
            assert letter["error_code"] == "negative_stock"
            assert letter["queue"] == queue

        for refused in (binary_refused, structured_refused):
            explained = await agentbus("explain", refused.id, "--json", env=env)
            code, out, err = await finish(explained)
            assert code == 0, err
            fate = json.loads(out)
            assert fate["type"] == "inventory.adjusted"
            [where] = fate["dead_letters"]
            assert (where["queue"], where["error_code"]) == (queue, "negative_stock")
    finally:
        if runner.returncode is None:
            runner.terminate()
        code, _, err = await finish(runner)
        from consumers import inventory

        names = [spec.name for spec in topology(queue, inventory.build().subscribes, RetryPolicy())]
        for name in names:
            await transport.delete_queue(name)
        await transport.close()
    assert code == 0, err


async def test_the_sdk_reads_every_event_agentbus_publishes(amqp_url: str, exchange: str) -> None:
    events = [
        new_event(CATALOG[event_type].model_validate(data), source="/services/test")
        for event_type, data in sorted(EXAMPLES.items())
    ]
    transport = RabbitTransport(amqp_url, exchange=exchange)
    await transport.start()
    try:
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            tap = await channel.declare_queue(exclusive=True)
            await tap.bind(exchange, routing_key="#")
            await Bus(transport, codec).publish_many(events)
            received: list[Message] = []
            while len(received) < len(events):
                got = await tap.get(timeout=10)
                received.append(
                    Message(
                        got.body,
                        got.routing_key or "",
                        content_type=got.content_type,
                        headers=dict(got.headers),
                    )
                )
                await got.ack()
    finally:
        await transport.close()
    for sent, message in zip(events, received, strict=True):
        parsed = cloudevents_sdk.parse(message)
        wire = json.loads(sent.model_dump_json(exclude_none=True))
        assert parsed.get_id() == sent.id
        assert parsed.get_type() == sent.type
        assert parsed.get_source() == sent.source
        assert parsed.get_subject() == sent.subject
        assert parsed.get_time() == sent.time
        assert parsed.get_datacontenttype() == "application/json"
        assert parsed.get_extension("correlationid") == sent.correlationid
        assert parsed.get_data() == wire["data"]


async def test_a_recording_of_a_mixed_stream_publishes_back_exactly_its_valid_events(
    amqp_url: str, exchange: str, tmp_path: Path
) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url, "AGENTBUS_EXCHANGE": exchange}
    ours = [new_event(StockReceived(sku=f"MIX-{n}", quantity=n + 1), source="/x") for n in range(3)]
    theirs = [product(f"MIX-{n}") for n in range(3)]
    junk = [
        Message(b"<xml/>", "stock.received", content_type="application/xml"),
        Message(b'{"no": "event"}', "stock.received", content_type="application/json"),
        # A CloudEvent, but refused: its data breaks the catalog's model.
        cloudevents_sdk.structured(
            new_event(StockReceived(sku="MIX-BAD", quantity=1), source="/x")
        ),
    ]
    bad = json.loads(junk[2].body)
    bad["data"]["quantity"] = -1
    junk[2] = Message(json.dumps(bad).encode(), "stock.received", content_type=junk[2].content_type)
    valid = [ours[0].id, theirs[0].id, theirs[1].id, ours[1].id, theirs[2].id, ours[2].id]
    transport = RabbitTransport(amqp_url, exchange=exchange)
    await transport.start()
    bus = Bus(transport, codec)

    first = tmp_path / "mixed.jsonl"
    # Counted in events: it stops at the last one, which follows everything else.
    recorder = await agentbus("record", "--out", str(first), "--count", "6", env=env)
    try:
        assert recorder.stderr is not None
        line = await asyncio.wait_for(recorder.stderr.readline(), 60)
        assert b"recording" in line, line
        await bus.publish(ours[0])
        await send_plainly(
            amqp_url,
            exchange,
            [
                cloudevents_sdk.binary(theirs[0]),
                junk[0],
                cloudevents_sdk.structured(theirs[1]),
                junk[1],
            ],
        )
        await bus.publish(ours[1])
        await send_plainly(amqp_url, exchange, [junk[2], cloudevents_sdk.binary(theirs[2])])
        await bus.publish(ours[2])
        code, _, err = await finish(recorder)
    finally:
        if recorder.returncode is None:
            recorder.send_signal(signal.SIGINT)
            await finish(recorder)
    assert code == 0, err
    assert "recorded 6 event(s)" in err
    assert "skipped 3 message(s)" in err
    lines = [json.loads(line) for line in first.read_text().splitlines()]
    assert [e["id"] for e in lines if "agentbus.skipped" not in e] == valid

    second = tmp_path / "again.jsonl"
    recorder = await agentbus("record", "--out", str(second), "--count", "6", env=env)
    try:
        assert recorder.stderr is not None
        line = await asyncio.wait_for(recorder.stderr.readline(), 60)
        assert b"recording" in line, line
        publisher = await agentbus("publish", str(first), env=env)
        code, _, err = await finish(publisher)
        assert code == 0, err
        assert "published 6 event(s)" in err
        assert "3 skipped entries passed over" in err
        code, _, err = await finish(recorder)
        assert code == 0, err
    finally:
        if recorder.returncode is None:
            recorder.send_signal(signal.SIGINT)
            await finish(recorder)
        await transport.close()
    replayed = [json.loads(line) for line in second.read_text().splitlines()]
    assert [e["id"] for e in replayed] == valid
    assert all("agentbus.skipped" not in e for e in replayed)
    # Binary events were recorded in structured form, so they replay as structured events.
    assert replayed == [e for e in lines if "agentbus.skipped" not in e]
