"""The transport contract: the same tests on the in-process broker, RabbitMQ and Kafka."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.deadletters import list_dead_letters
from agentbus.envelope import CONTENT_TYPE, Event, EventCodec, name_of
from agentbus.errors import BrokerUnavailable, PermanentError, TransientError, Unroutable
from agentbus.partitions import FileRoster, PartitionedConsumer
from agentbus.retry import RetryPolicy
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.transport.base import Delivery, Message, QueueSpec
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import Harness, eventually

pytestmark = pytest.mark.rabbitmq

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.2, factor=2.0)


def settings(**overrides: Any) -> ConsumerSettings:
    values: dict[str, Any] = {"prefetch": 64, "concurrency": 8, "retry": FAST_RETRY}
    values.update(overrides)
    return ConsumerSettings(**values)


async def started_bus(harness: Harness, max_bytes: int = 1 << 20) -> Bus:
    transport = harness.connect()
    await transport.start()
    return Bus(transport, EventCodec(CATALOG, max_bytes=max_bytes))


async def test_topic_routing(harness: Harness) -> None:
    bus = await started_bus(harness)
    got: dict[str, list[str]] = defaultdict(list)
    patterns = {"orders": "order.*", "inventory": "inventory.#", "exact": "stock.received"}
    for label, pattern in patterns.items():
        queue = harness.queue(label)
        await bus.transport.declare([QueueSpec(queue, bindings=(pattern,), kind="classic")])

        async def collect(delivery: Delivery, label: str = label) -> None:
            got[label].append(delivery.message.routing_key)
            await delivery.ack()

        await bus.transport.consume(queue, collect, prefetch=10)
    for event_type in [
        "order.created",
        "order.cancelled",
        "inventory.low",
        "inventory.stock.received",
        "stock.received",
    ]:
        await bus.publish(sample(event_type, "k", 0))
    await eventually(lambda: sum(map(len, got.values())) == 5, harness)
    assert sorted(got["orders"]) == ["order.cancelled", "order.created"]
    assert sorted(got["inventory"]) == ["inventory.low", "inventory.stock.received"]
    assert got["exact"] == ["stock.received"]
    with pytest.raises(Unroutable):
        await bus.publish(sample_unbound())


def sample_unbound() -> Event[Any]:
    # A type no queue in this test binds: `order.*` needs exactly two words.
    from agentbus.envelope import new_event
    from tests.contract.catalog import sample_type

    return new_event(sample_type("order.created.v2")(key="k", seq=0), source="/tests")


async def test_unacked_message_is_redelivered_after_its_consumer_dies(harness: Harness) -> None:
    publisher = await started_bus(harness)
    queue = harness.queue("crash")
    await publisher.transport.declare([QueueSpec(queue, bindings=("order.created",))])
    doomed = harness.connect()
    await doomed.start()
    held: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        held.append(delivery)  # never settled: the process "crashes" holding it

    await doomed.consume(queue, hold, prefetch=1)
    event = sample("order.created", "k1", 1)
    await publisher.publish(event)
    await eventually(lambda: len(held) == 1, harness)
    if harness.flags_redelivery:
        assert not held[0].redelivered
    await doomed.abort()

    survivor = harness.connect()
    await survivor.start()
    redelivered: list[Delivery] = []

    async def take(delivery: Delivery) -> None:
        redelivered.append(delivery)
        await delivery.ack()

    await survivor.consume(queue, take, prefetch=1)
    await eventually(lambda: len(redelivered) == 1, harness)
    if harness.flags_redelivery:
        assert redelivered[0].redelivered
    again = redelivered[0].message
    # Named by the event in it, as the contract names events, not by a broker property.
    assert name_of(again.body, content_type=again.content_type, headers=again.headers)[0] == (
        event.id
    )
    assert again.body == held[0].message.body


def recording_service(
    name: str, fail_with: Exception | None, calls: list[tuple[float, Event[Any]]], harness: Harness
) -> Service:
    service = Service(name)

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        calls.append((harness.now(), event))
        if fail_with is not None:
            raise fail_with

    return service


async def dead_letters(bus: Bus, queue: str) -> list[Any]:
    return await list_dead_letters(bus.transport, [queue])


async def test_transient_failure_is_retried_with_growing_delays_then_dead_lettered(
    harness: Harness,
) -> None:
    bus = await started_bus(harness)
    calls: list[tuple[float, Event[Any]]] = []
    service = recording_service(
        harness.queue("flaky"), TransientError("inventory db is down"), calls, harness
    )
    consumer = Consumer(service, bus, settings())
    await consumer.start()
    await bus.publish(sample("order.created", "k", 1))
    await eventually(lambda: consumer.stats.dead_lettered == 1, harness, timeout=15)
    await consumer.stop()

    assert len(calls) == FAST_RETRY.max_attempts
    times = [t for t, _ in calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    expected = [FAST_RETRY.delay(n) for n in range(1, FAST_RETRY.max_attempts)]
    for gap, delay in zip(gaps, expected, strict=True):
        assert gap >= delay * 0.95, (gaps, expected)
    assert gaps == sorted(gaps), f"delays must grow: {gaps}"
    [letter] = await dead_letters(bus, service.queue)
    assert letter.error_code == "transient"
    assert letter.attempts == FAST_RETRY.max_attempts
    assert "inventory db is down" in letter.detail
    assert letter.event_id == calls[0][1].id


async def test_unexpected_exception_counts_as_transient(harness: Harness) -> None:
    bus = await started_bus(harness)
    calls: list[tuple[float, Event[Any]]] = []
    service = recording_service(harness.queue("bug"), KeyError("sku"), calls, harness)
    consumer = Consumer(service, bus, settings())
    await consumer.start()
    await bus.publish(sample("order.created", "k", 1))
    await eventually(lambda: consumer.stats.dead_lettered == 1, harness, timeout=15)
    await consumer.stop()
    assert len(calls) == FAST_RETRY.max_attempts
    [letter] = await dead_letters(bus, service.queue)
    assert letter.error_code == "unexpected_error"
    assert "KeyError" in letter.detail


async def test_permanent_failure_is_dead_lettered_at_once(harness: Harness) -> None:
    bus = await started_bus(harness)
    calls: list[tuple[float, Event[Any]]] = []
    service = recording_service(
        harness.queue("strict"),
        PermanentError("on_hand would go below zero", code="negative_stock"),
        calls,
        harness,
    )
    consumer = Consumer(service, bus, settings())
    await consumer.start()
    await bus.publish(sample("order.created", "k", 1))
    await eventually(lambda: consumer.stats.dead_lettered == 1, harness)
    await consumer.stop()
    assert len(calls) == 1
    [letter] = await dead_letters(bus, service.queue)
    assert (letter.error_code, letter.attempts) == ("negative_stock", 1)


def _valid_body(seq: int) -> bytes:
    return EventCodec(CATALOG).encode(sample("order.created", f"ok{seq}", seq))


MALFORMED: dict[str, tuple[bytes, str | None]] = {
    "malformed_json": (b'{"specversion": "1.0", "id": ', CONTENT_TYPE),
    "not_an_object": (b'["a", "list"]', CONTENT_TYPE),
    "invalid_encoding": (b'{"id": "\xff\xfe"}', CONTENT_TYPE),
    "missing_attribute": (
        b'{"specversion":"1.0","source":"/x","type":"order.created",'
        b'"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json",'
        b'"data":{"key":"a","seq":1}}',
        CONTENT_TYPE,
    ),
    "invalid_attribute": (
        b'{"specversion":"1.0","id":"e1","source":"/x","type":"order.created",'
        b'"time":"yesterday","datacontenttype":"application/json","data":{"key":"a","seq":1}}',
        CONTENT_TYPE,
    ),
    "unsupported_specversion": (
        b'{"specversion":"0.3","id":"e1","source":"/x","type":"order.created",'
        b'"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json",'
        b'"data":{"key":"a","seq":1}}',
        CONTENT_TYPE,
    ),
    "unknown_type": (
        b'{"specversion":"1.0","id":"e1","source":"/x","type":"order.teleported",'
        b'"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json",'
        b'"data":{"key":"a","seq":1}}',
        CONTENT_TYPE,
    ),
    "invalid_data": (
        b'{"specversion":"1.0","id":"e1","source":"/x","type":"order.created",'
        b'"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json",'
        b'"data":{"key":"a","seq":-5}}',
        CONTENT_TYPE,
    ),
    "wrong_content_type": (_valid_body(99), "text/plain"),
    "too_large": (b'{"pad": "' + b"x" * 5000 + b'"}', CONTENT_TYPE),
}


async def test_each_malformed_kind_is_dead_lettered_with_its_reason_and_service_goes_on(
    harness: Harness,
) -> None:
    bus = await started_bus(harness, max_bytes=4096)
    seen: list[int] = []
    service = Service(harness.queue("hostile"))

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        seen.append(event.data.seq)

    consumer = Consumer(service, bus, settings())
    await consumer.start()
    for seq, (body, content_type) in enumerate(MALFORMED.values()):
        await bus.transport.publish(
            Message(body=body, routing_key="order.created", content_type=content_type)
        )
        await bus.transport.publish(
            Message(body=_valid_body(seq), routing_key="order.created", content_type=CONTENT_TYPE)
        )
    await eventually(
        lambda: consumer.stats.dead_lettered == len(MALFORMED) and len(seen) == len(MALFORMED),
        harness,
    )
    await consumer.stop()
    letters = await dead_letters(bus, service.queue)
    assert sorted(letter.error_code for letter in letters) == sorted(MALFORMED)
    assert sorted(seen) == list(range(len(MALFORMED)))
    assert all(letter.detail for letter in letters)


async def test_a_service_that_retries_in_place_applies_the_queue_order_through_failures(
    harness: Harness,
) -> None:
    """One lane, retries in place: the event that fails for a while is applied before
    everything delivered after it, whatever its subject; with retries through delay
    queues the others overtake it."""
    if harness.name == "kafka":
        pytest.skip("a log orders a partition, not a topic: subjects are spread over several")

    async def applied(retries_in_place: bool, name: str) -> list[int]:
        bus = await started_bus(harness)
        service = Service(harness.queue(name), max_concurrency=1, retries_in_place=retries_in_place)
        order: list[int] = []
        failures = {0: 2, 3: 1}  # seq -> transient failures before it is applied

        @service.handles("order.created")
        async def handle(event: Event[Any], ctx: Context) -> None:
            seq = event.data.seq
            if failures.get(seq, 0):
                failures[seq] -= 1
                raise TransientError("the database is busy")
            order.append(seq)

        consumer = Consumer(service, bus, settings())
        await consumer.start()
        await bus.publish_many([sample("order.created", f"sku-{n}", n) for n in range(8)])
        await eventually(lambda: len(order) == 8, harness, timeout=20)
        await consumer.stop()
        assert consumer.stats.retried == 3
        return order

    assert await applied(True, "held") == list(range(8))
    assert await applied(False, "queued") != list(range(8))


async def test_per_subject_order_is_kept_with_concurrency(harness: Harness) -> None:
    bus = await started_bus(harness)
    service = Service(harness.queue("ordered"))
    seen: dict[str, list[int]] = defaultdict(list)
    active = 0
    peak = 0
    rng = random.Random(7)

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(rng.random() * 0.004)
        seen[event.data.key].append(event.data.seq)
        active -= 1

    consumer = Consumer(service, bus, settings(concurrency=8, prefetch=100))
    await consumer.start()
    keys = [f"sku-{n}" for n in range(12)]
    events = [sample("order.created", keys[i % len(keys)], i) for i in range(240)]
    await bus.publish_many(events)
    await eventually(lambda: sum(map(len, seen.values())) == 240, harness, timeout=20)
    await consumer.stop()
    for key in keys:
        assert seen[key] == sorted(seen[key]), f"{key} out of order: {seen[key]}"
    assert peak > 1, "handlers never ran in parallel"


async def test_batch_commits_the_good_and_dead_letters_the_poison(harness: Harness) -> None:
    bus = await started_bus(harness)
    service = Service(harness.queue("batched"))
    committed: list[int] = []
    batch_sizes: list[int] = []

    @service.handles_batch("order.created", max_batch=50)
    async def handle(events: Sequence[Event[Any]], ctx: Context) -> None:
        batch_sizes.append(len(events))
        if any(event.data.key == "poison" for event in events):
            raise PermanentError("poison pill", code="poison")
        committed.extend(event.data.seq for event in events)

    consumer = Consumer(service, bus, settings(concurrency=1))
    events = [sample("order.created", "poison" if i == 7 else f"k{i}", i) for i in range(40)]
    await bus.transport.declare(consumer.topology())
    await bus.publish_many(events)
    await consumer.start()
    await eventually(lambda: len(committed) == 39 and consumer.stats.dead_lettered == 1, harness)
    await consumer.stop()
    assert sorted(committed) == [i for i in range(40) if i != 7]
    assert max(batch_sizes) > 1, "deliveries were never batched"
    [letter] = await dead_letters(bus, service.queue)
    assert letter.error_code == "poison"
    assert letter.event_id == events[7].id


async def test_graceful_stop_finishes_and_acks_in_flight(harness: Harness) -> None:
    bus = await started_bus(harness)
    service = Service(harness.queue("drain"))
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        started.set()
        await release.wait()
        finished.append(event.data.seq)

    consumer = Consumer(service, bus, settings(concurrency=4))
    await consumer.start()
    await bus.publish_many([sample("order.created", f"k{i}", i) for i in range(4)])
    await eventually(lambda: started.is_set() and consumer.in_flight == 4, harness)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop returned with work in flight"
    release.set()
    await stopping
    assert sorted(finished) == [0, 1, 2, 3]
    await bus.publish(sample("order.created", "after", 9))  # queued, nobody consuming
    await eventually(lambda: True, harness)
    await asyncio.sleep(0 if harness.name == "memory" else 0.2)
    assert await bus.transport.depth(service.queue) == 1, "acked messages came back"


async def test_a_dropped_connection_never_lets_later_events_overtake(harness: Harness) -> None:
    """The broker closes the connection while a batch is in hand and more of the same
    subject wait behind it. Whatever was delivered on the dead channel comes again;
    what is applied must still be each subject's events in publish order."""
    bus = await started_bus(harness)
    service = Service(harness.queue("dropped"))
    applied: list[int] = []
    seen: set[str] = set()  # what an inbox would hold
    holding = asyncio.Event()
    release = asyncio.Event()

    @service.handles_batch("order.created", max_batch=2)
    async def handle(events: Sequence[Event[Any]], ctx: Context) -> None:
        if not release.is_set():
            holding.set()
            await release.wait()
        for event in events:
            if event.id not in seen:
                seen.add(event.id)
                applied.append(event.data.seq)

    consumer = Consumer(service, bus, settings(concurrency=1, prefetch=64))
    await consumer.start()
    await bus.publish_many([sample("order.created", "k1", i) for i in range(10)])
    await eventually(holding.is_set, harness)
    await eventually(lambda: consumer.in_flight == 10, harness)
    await harness.drop_connections(bus.transport)
    release.set()
    await eventually(lambda: len(applied) == 10, harness, timeout=30)
    await consumer.stop()
    assert applied == list(range(10))
    await eventually(lambda: consumer.in_flight == 0, harness)


async def test_partitioned_consumers_share_a_queue_and_keep_each_keys_order(
    harness: Harness, tmp_path: Path
) -> None:
    """Two members of one partitioned service (as two processes would be): each key
    is handled by one member at a time, in order; when one member leaves, the
    other takes its partitions over and nothing is lost or reordered. (What the
    leaving member held unacked comes again, as after a crash: an inbox drops it.)"""
    if harness.name == "kafka":
        pytest.skip(
            "Kafka spreads a topic's partitions over the members of a group by itself: "
            "queue partitions (AGENTBUS_PARTITIONS) are how RabbitMQ gets the same"
        )
    service = Service(harness.queue("parted"))
    seen: dict[str, list[int]] = defaultdict(list)
    applied: set[str] = set()
    handled_by: dict[str, set[str]] = defaultdict(set)

    def member(name: str) -> Service:
        part = Service(service.name)

        @part.handles("order.created")
        async def handle(event: Event[Any], ctx: Context) -> None:
            await asyncio.sleep(0.001)
            if event.id not in applied:
                applied.add(event.id)
                seen[event.data.key].append(event.data.seq)
            handled_by[name].add(event.data.key)

        return part

    buses = [await started_bus(harness) for _ in range(2)]
    members = [
        PartitionedConsumer(
            member(f"m{n}"),
            bus,
            settings(concurrency=4, prefetch=50),
            partitions=4,
            roster=FileRoster(tmp_path, service.name),
            interval=3600,  # rebalanced by hand below
        )
        for n, bus in enumerate(buses)
    ]
    for one in members:
        await one.start()
    await members[0].rebalance()  # it learns of the second member
    assert sorted(members[0].owned | members[1].owned) == [0, 1, 2, 3]
    assert members[0].owned.isdisjoint(members[1].owned)
    keys = [f"k{n}" for n in range(16)]
    first = [sample("order.created", keys[i % 16], i) for i in range(160)]
    await buses[0].publish_many(first)
    await eventually(lambda: sum(map(len, seen.values())) == 160, harness, timeout=30)
    assert handled_by["m0"], "the first member got no work"
    assert handled_by["m1"], "the second member got no work"
    await members[1].stop()
    await members[0].rebalance()
    assert members[0].owned == {0, 1, 2, 3}
    second = [sample("order.created", keys[i % 16], i) for i in range(160, 320)]
    await buses[0].publish_many(second)
    await eventually(lambda: sum(map(len, seen.values())) == 320, harness, timeout=30)
    await members[0].stop()
    for key in keys:
        assert seen[key] == sorted(seen[key]), f"{key} out of order: {seen[key]}"
        assert len(seen[key]) == 20, f"{key}: {seen[key]}"


async def test_a_consumer_keeps_consuming_and_loses_nothing_when_the_broker_restarts(
    harness: Harness,
) -> None:
    """The broker stops and starts again while a consumer is mid-stream. The consumer
    goes on by itself, and every event published before the restart and after it is
    applied (what was in hand when the broker went may come twice: an inbox drops it)."""
    bus = await started_bus(harness)
    service = Service(harness.queue("restarted"))
    applied: list[int] = []
    # From the tenth event on, handlers hold what they have in hand until the broker is
    # back: the restart then always falls mid-stream (a stream left to run raced the
    # broker's shutdown, and on Kafka's controlled one it sometimes ended first).
    restarted = asyncio.Event()

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        await asyncio.sleep(0.05)
        if len(applied) >= 10:
            await restarted.wait()
        applied.append(event.data.seq)

    consumer = Consumer(service, bus, settings(concurrency=2, prefetch=16))
    await consumer.start()
    await bus.publish_many([sample("order.created", f"k{i % 8}", i) for i in range(200)])
    await eventually(lambda: len(applied) >= 10, harness, timeout=30)
    await harness.restart_broker()
    restarted.set()
    after = [sample("order.created", f"k{i % 8}", i) for i in range(200, 240)]
    for _ in range(300):
        try:
            await bus.publish_many(after)
            break
        except BrokerUnavailable:  # the client is still reconnecting
            await asyncio.sleep(0.2)
    await eventually(lambda: set(applied) >= set(range(240)), harness, timeout=120)
    await consumer.stop()
    assert consumer.stats.dead_lettered == 0
    for key in range(8):
        # Each subject's events still come in order, a replayed run aside.
        firsts = [seq for seq in dict.fromkeys(applied) if seq % 8 == key]
        assert firsts == sorted(firsts), f"k{key} out of order: {firsts}"
