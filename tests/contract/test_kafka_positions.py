"""Exactly-once effects on Kafka with positions stored in the service's database: a
member killed in the middle of a batch hands its partitions over and nothing is lost or
applied twice. (Kafka only: on AMQP the broker keeps each consumer's place.)"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.store import Database, StoreBinding, Transaction, open_database, tables
from agentbus.transport.base import LogPartition
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import KafkaHarness, eventually
from tests.contract.test_store_contract import MIGRATIONS, read_totals, totals

pytestmark = pytest.mark.kafka

PARTITIONS = 6
TOPIC = "order.created"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def open_member_db(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Database]:
    """Each member opens the service's database on its own, as separate processes do."""
    url = request.getfixturevalue("database_url") if request.param == "postgresql" else None
    name = f"kept_{uuid.uuid4().hex[:8]}"
    return lambda: open_database(name, EventCodec(CATALOG), url=url, data_dir=tmp_path)


def kept(apply_hook: Callable[[Event[Any]], None] = lambda event: None) -> Service:
    """Sums each key's sequence numbers; `apply_hook` runs inside the transaction."""
    service = Service("kept")
    store = StoreBinding(service, MIGRATIONS)

    @store.applies("order.created")
    def add(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        apply_hook(event)
        upsert = tx.insert(totals).values(key=event.data.key, sum=event.data.seq, count=1)
        tx.connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[totals.c.key],
                set_={"sum": totals.c.sum + event.data.seq, "count": totals.c.count + 1},
            )
        )

    return service


async def member(
    kafka: KafkaHarness, service: Service, database: Database
) -> tuple[Consumer, StoreBinding]:
    """A member ready to join its group (`consumer.start()`), its database migrated."""
    transport = kafka.connect()
    await transport.start()
    [store] = [hook.__self__ for hook in service.startup]  # type: ignore[attr-defined]
    assert isinstance(store, StoreBinding)
    await store.attach(database, None)
    return Consumer(service, Bus(transport, EventCodec(CATALOG)), SETTINGS), store


SETTINGS = ConsumerSettings(prefetch=64, concurrency=8)


async def inbox_size(database: Database) -> int:
    return await database.read(
        lambda c: c.execute(sa.select(sa.func.count()).select_from(tables.inbox)).scalar_one()
    )


async def end_offsets(kafka: KafkaHarness) -> dict[tuple[str, int], int]:
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await reader.start()
    try:
        tps = [TopicPartition(kafka.prefix + TOPIC, p) for p in range(PARTITIONS)]
        ends = await reader.end_offsets(tps)
    finally:
        await reader.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


@pytest.mark.parametrize("fate", ["crashed", "late"])
async def test_a_member_killed_mid_batch_hands_over_with_nothing_lost_or_doubled(
    kafka: KafkaHarness,
    open_member_db: Callable[[], Database],
    fate: str,
    request: pytest.FixtureRequest,
) -> None:
    """`crashed`: the killed member's open transaction never commits. `late`: it commits
    after the other member has taken its partitions over (a process paused, not dead)."""
    if fate == "late" and request.node.callspec.params["open_member_db"] == "sqlite":
        pytest.skip(
            "SQLite has one write lock, held by the stuck member: the other cannot claim "
            "anything until that transaction ends, so no late commit can race it"
        )
    inside = threading.Event()  # the doomed member is inside a batch's transaction
    let_go = threading.Event()
    applied_by_doomed = 0

    def doomed_hook(event: Event[Any]) -> None:
        nonlocal applied_by_doomed
        if let_go.is_set() and fate == "crashed":
            raise RuntimeError("the process is gone")
        applied_by_doomed += 1
        if applied_by_doomed == 25:
            inside.set()
            assert let_go.wait(60)
            if fate == "crashed":
                raise RuntimeError("the process is gone")

    doomed_db, survivor_db = open_member_db(), open_member_db()
    doomed, _ = await member(kafka, kept(doomed_hook), doomed_db)
    # Migrated now: on SQLite the write lock is the doomed member's while it is stuck.
    survivor, store = await member(kafka, kept(), survivor_db)
    await doomed.start()
    events = [sample("order.created", f"k{n % 40}", n) for n in range(600)]
    publisher = kafka.connect()
    await publisher.start()
    bus = Bus(publisher, EventCodec(CATALOG))
    try:
        await bus.publish_many(events[:300])
        await asyncio.to_thread(inside.wait, 30)
        assert inside.is_set(), "the doomed member never got into a batch"
        await doomed.bus.transport.abort()
        if fate == "crashed":
            let_go.set()
        await survivor.start()
        await bus.publish_many(events[300:])
        if fate == "late":
            await eventually(lambda: survivor.stats.batches > 0, kafka, timeout=30)
            let_go.set()

        for _ in range(600):
            if await inbox_size(survivor_db) == len(events):
                break
            await asyncio.sleep(0.1)
        expected: dict[str, tuple[int, int]] = {}
        for event in events:
            total, count = expected.get(event.data.key, (0, 0))
            expected[event.data.key] = (total + event.data.seq, count + 1)
        assert await read_totals(survivor_db) == expected
        assert await inbox_size(survivor_db) == len(events)
        await survivor.stop()
        ends = await end_offsets(kafka)
        group = f"{kafka.prefix}kept"
        stored = await store.stored_positions(group, list(ends))
        assert set(stored) == set(ends)
        assert all(stored[where] <= ends[where] for where in ends)
    finally:
        let_go.set()
        await doomed.stop()
        await survivor.stop()
        await doomed_db.close()
        await survivor_db.close()


async def test_a_new_member_reads_from_the_position_stored_not_from_kafka(
    kafka: KafkaHarness, open_member_db: Callable[[], Database]
) -> None:
    publisher = kafka.connect()
    await publisher.start()
    bus = Bus(publisher, EventCodec(CATALOG))
    events = [sample("order.created", "one-key", n) for n in range(10)]
    await bus.publish_many(events)
    ends = await end_offsets(kafka)
    [(topic, partition)] = [where for where, end in ends.items() if end == 10]
    database = open_member_db()
    try:
        service = kept()
        [store] = [hook.__self__ for hook in service.startup]  # type: ignore[attr-defined]
        await store.attach(database, None)
        group = f"{kafka.prefix}kept"
        # As if the first four had taken effect in an earlier life of the service, whose
        # commits to Kafka were lost.
        await database.run(lambda tx: tx.advance({LogPartition(group, topic, partition): 4}))
        transport = kafka.connect()
        await transport.start()
        consumer = Consumer(service, Bus(transport, EventCodec(CATALOG)), SETTINGS)
        await consumer.start()
        await eventually(lambda: consumer.stats.processed == 6, kafka, timeout=30)
        await asyncio.sleep(0.5)
        await consumer.stop()
        assert consumer.stats.processed == 6
        assert await read_totals(database) == {"one-key": (sum(range(4, 10)), 6)}
        assert await store.stored_positions(group, [(topic, partition)]) == {(topic, partition): 10}
    finally:
        await database.close()
