"""Exactly-once effects through inbox and outbox, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.errors import PermanentError
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.store import (
    Database,
    Migration,
    OutboxRelay,
    StoreBinding,
    Transaction,
    open_database,
    tables,
)
from agentbus.store.migrations import create_tables
from agentbus.transport.base import PARTITION_KEY_HEADER, Delivery, LogPartition, QueueSpec
from agentbus.transport.memory import InMemoryBroker
from tests.contract.catalog import CATALOG, MODELS, sample
from tests.contract.harness import MemoryHarness, eventually

pytestmark = pytest.mark.postgres

metadata = sa.MetaData()
totals = sa.Table(
    "totals",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("sum", sa.Integer, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
)
MIGRATIONS = [Migration("summer", 1, "totals", create_tables(totals))]
CATALOG_CODEC = EventCodec(CATALOG)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    codec = EventCodec(CATALOG)
    if request.param == "sqlite":
        db = open_database("summer", codec, url=None, data_dir=tmp_path)
    else:
        url = request.getfixturevalue("database_url")
        db = open_database(f"summer_{uuid.uuid4().hex[:8]}", codec, url=url, data_dir=tmp_path)
    try:
        yield db
    finally:
        if db.schema is not None:
            schema = db.schema
            await db.read(
                lambda c: (
                    c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')) and c.commit()
                )
            )
        await db.close()


def summer(binding_holder: list[StoreBinding]) -> Service:
    service = Service("summer", publishes=("inventory.low",))
    store = StoreBinding(service, MIGRATIONS)
    binding_holder.append(store)

    @store.applies("order.created")
    def add(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        if event.data.key == "poison":
            raise PermanentError("poison", code="poison")
        upsert = tx.insert(totals).values(key=event.data.key, sum=event.data.seq, count=1)
        tx.connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[totals.c.key],
                set_={"sum": totals.c.sum + event.data.seq, "count": totals.c.count + 1},
            )
        )
        ctx.emit(MODELS["inventory.low"](key=event.data.key, seq=event.data.seq), cause=event)

    return service


def outbox_ids(connection: sa.Connection) -> list[str]:
    return list(connection.execute(sa.select(tables.outbox.c.event_id)).scalars())


async def read_totals(db: Database) -> dict[str, tuple[int, int]]:
    def read(connection: sa.Connection) -> dict[str, tuple[int, int]]:
        rows = connection.execute(sa.select(totals))
        return {row.key: (row.sum, row.count) for row in rows}

    return await db.read(read)


async def test_duplicates_and_redeliveries_apply_once_and_emit_once(database: Database) -> None:
    harness = MemoryHarness()
    transport = harness.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    holder: list[StoreBinding] = []
    service = summer(holder)
    relay = OutboxRelay(database, bus)
    await holder[0].attach(database, relay)
    await transport.declare([QueueSpec("downstream", bindings=("inventory.low",))])
    consumer = Consumer(service, bus, ConsumerSettings(concurrency=4))
    await consumer.start()

    events = [sample("order.created", f"k{n % 5}", n) for n in range(100)]
    duplicated = events + events[::3] + events[:10]
    await bus.publish_many(duplicated)
    await eventually(lambda: consumer.stats.processed == len(duplicated), harness)
    while await relay.pump():
        pass
    await consumer.stop()

    expected: dict[str, tuple[int, int]] = {}
    for event in events:
        total, count = expected.get(event.data.key, (0, 0))
        expected[event.data.key] = (total + event.data.seq, count + 1)
    assert await read_totals(database) == expected
    assert relay.published == len(events)
    assert await transport.depth("downstream") == len(events)
    # Relayed events carry their ordering key, which partitioned queues spread by.
    relayed = await transport.get("downstream")
    assert relayed is not None
    subject = CATALOG_CODEC.decode(relayed.message.body).subject
    assert relayed.message.headers[PARTITION_KEY_HEADER] == subject


async def test_poison_in_a_batch_is_dead_lettered_and_the_rest_commits(database: Database) -> None:
    harness = MemoryHarness()
    transport = harness.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    holder: list[StoreBinding] = []
    service = summer(holder)
    await holder[0].attach(database, OutboxRelay(database, bus))
    consumer = Consumer(service, bus, ConsumerSettings(concurrency=1))
    await transport.declare(consumer.topology())
    events = [sample("order.created", "poison" if n == 5 else "good", n) for n in range(20)]
    await bus.publish_many(events)
    await consumer.start()
    await eventually(lambda: consumer.stats.processed == 19, harness)
    await consumer.stop()
    assert consumer.stats.dead_lettered == 1
    assert await read_totals(database) == {"good": (sum(range(20)) - 5, 19)}


async def test_relay_that_dies_before_marking_republishes_the_same_ids(database: Database) -> None:
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    await database.migrate(MIGRATIONS)
    await transport.declare([QueueSpec("sink", bindings=("#",))])
    staged = [sample("inventory.low", "sku", n) for n in range(5)]
    await database.run(lambda tx: tx.stage(staged))

    class DiesAfterPublish(Exception):
        pass

    relay = OutboxRelay(database, bus)
    original = transport.publish_many

    async def publish_then_die(messages: Any) -> None:
        await original(messages)
        raise DiesAfterPublish

    original = transport.publish_each  # type: ignore[assignment]

    async def publish_each_then_die(messages: Any) -> Any:
        await original(messages)
        raise DiesAfterPublish

    transport.publish_each = publish_each_then_die  # type: ignore[method-assign]
    with pytest.raises(DiesAfterPublish):
        await relay.pump()
    transport.publish_each = original  # type: ignore[method-assign]
    assert await relay.pump() == 5
    assert await relay.pump() == 0

    ids: list[str] = []
    while (delivery := await transport.get("sink")) is not None:
        ids.append(await _id(delivery))
    assert ids == [e.id for e in staged] * 2, "same ids, same order, twice"


async def _id(delivery: Delivery) -> str:
    await delivery.ack()
    assert delivery.message.message_id is not None
    return delivery.message.message_id


async def test_migrations_are_versioned_and_rerunnable(database: Database) -> None:
    first = await database.migrate(MIGRATIONS)
    assert [(m.component, m.version) for m in first] == [
        ("agentbus", 1),
        ("agentbus", 2),
        ("agentbus", 3),
        ("agentbus", 4),
        ("agentbus", 5),
        ("summer", 1),
    ]
    assert await database.migrate(MIGRATIONS) == []
    extra = sa.Table("extra", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    upgraded = await database.migrate(
        [*MIGRATIONS, Migration("summer", 2, "extra", create_tables(extra))]
    )
    assert [(m.component, m.version) for m in upgraded] == [("summer", 2)]
    with pytest.raises(ValueError, match="numbered"):
        await database.migrate([Migration("summer", 3, "gap", create_tables())])


async def test_an_existing_database_is_upgraded_in_place(database: Database) -> None:
    from agentbus.store import tables
    from agentbus.store.migrations import PLATFORM

    # A database as version 1 left it, with an event waiting in its outbox.
    schema = database.schema
    if schema is not None:

        def create_schema(connection: sa.Connection) -> None:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            connection.commit()

        await database.read(create_schema)
    await database.run(lambda tx: tx.migrate([PLATFORM[0]]))
    event = sample("inventory.low", "sku", 1)

    def stage_v1(tx: Transaction) -> None:
        # Only version 1's columns, so the statement works on the old table.
        tx.execute(
            sa.insert(tables.outbox).values(
                event_id=event.id,
                type=event.type,
                subject=event.subject,
                body=b'{"id": "%s", "causationid": "cause-1"}' % event.id.encode(),
                created_at=datetime.now(UTC),
            )
        )

    await database.run(stage_v1)
    upgraded = await database.migrate(MIGRATIONS)
    assert [(m.component, m.version) for m in upgraded][:4] == [
        ("agentbus", 2),
        ("agentbus", 3),
        ("agentbus", 4),
        ("agentbus", 5),
    ]

    def read(connection: sa.Connection) -> list[Any]:
        return list(connection.execute(sa.select(tables.outbox)).all())

    rows = await database.read(read)
    # Version 3 found the cause of the row already there in its body, and version 5's
    # rebuild of the table on SQLite kept it.
    assert [(row.event_id, row.unroutable_since, row.causation_id) for row in rows] == [
        (event.id, None, "cause-1")
    ]


async def test_unroutable_events_do_not_block_the_outbox(database: Database) -> None:
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    await database.migrate(MIGRATIONS)
    await transport.declare([QueueSpec("sink", bindings=("order.*",))])
    nobody = sample("inventory.low", "sku", 1)  # no queue is bound for it
    somebody = [sample("order.created", "o", n) for n in range(3)]
    await database.run(lambda tx: tx.stage([somebody[0], nobody, *somebody[1:]]))
    relay = OutboxRelay(database, bus, unroutable_grace=0.2)
    assert await relay.pump() == 3, "the routable events went out past the unroutable one"
    assert await transport.depth("sink") == 3
    assert await relay.backlog() == 1
    await asyncio.sleep(0.25)
    assert await relay.pump() == 1, "given up after the grace period"
    assert relay.unroutable == 1
    assert await relay.backlog() == 0


async def test_a_relay_is_quiet_only_after_finding_the_outbox_empty_since_the_last_wake(
    database: Database,
) -> None:
    transport = InMemoryBroker().connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    await database.migrate(MIGRATIONS)
    await transport.declare([QueueSpec("sink", bindings=("#",))])
    relay = OutboxRelay(database, bus)
    assert not relay.quiet, "nothing is known before the first look"
    assert not relay.publishing, "nor whether it holds the lease"
    assert await relay.pump() == 0
    assert relay.quiet
    await database.run(lambda tx: tx.stage([sample("inventory.low", "sku", 1)]))
    relay.wake()  # as every writer does after its commit
    assert not relay.quiet
    assert relay.publishing, "it holds the lease and was woken: rows wait"
    # Another process's relay finds the lease taken: it never knows, and must count.
    other = OutboxRelay(database, bus)
    assert await other.pump() == 0
    assert not other.quiet
    assert not other.publishing
    assert await other.backlog() == 1
    assert await relay.backlog() == 1
    assert await relay.pump() == 1
    assert relay.quiet, "its read saw less than a batch, and nothing was committed since"
    assert not relay.publishing
    # A full batch may have left more behind; so may a commit during the pump.
    relay.batch = 2
    await database.run(lambda tx: tx.stage([sample("inventory.low", "sku", n) for n in (2, 3, 4)]))
    relay.wake()
    assert await relay.pump() == 2
    assert not relay.quiet, "a full batch read may have left more behind"
    assert await relay.pump() == 1
    assert relay.quiet
    await database.run(lambda tx: tx.stage([sample("inventory.low", "sku", 5)]))
    relay.wake()
    pumping = asyncio.create_task(relay.pump())
    await asyncio.sleep(0)  # the pump has taken its count of wakes
    await database.run(lambda tx: tx.stage([sample("inventory.low", "sku", 6)]))
    relay.wake()
    await pumping
    assert not relay.quiet, "committed while the pump ran"
    await relay.pump()  # row 6, unless the pump above already read it
    assert await relay.pump() == 0
    assert relay.quiet
    assert await relay.backlog() == 0


async def test_concurrent_units_of_work_commit_or_fail_alone_and_keep_their_order(
    database: Database,
) -> None:
    # On SQLite the units queued together share one transaction (run again alone
    # when one fails): a failing unit must take back its own writes and nobody else's,
    # and units run in the order they were handed over. PostgreSQL runs them side by side.
    await database.migrate(MIGRATIONS)
    ordered = database.dialect == "sqlite"
    failing = {7, 23}

    def unit(n: int) -> Any:
        def work(tx: Transaction) -> int:
            tx.execute(sa.insert(totals).values(key=f"k{n}", sum=n, count=1))
            if n in failing:
                raise ValueError(f"unit {n} fails after writing")
            return n

        return work

    def bump(tx: Transaction) -> None:  # queued after the inserts: sees them all
        tx.execute(sa.update(totals).values(count=totals.c.count + 1))

    def read(connection: sa.Connection) -> dict[str, tuple[int, int]]:
        rows = connection.execute(sa.select(totals.c.key, totals.c.sum, totals.c.count))
        return {row.key: (row.sum, row.count) for row in rows}

    inserts = await asyncio.gather(
        *(database.run(unit(n)) for n in range(40)), return_exceptions=True
    )
    for n, outcome in enumerate(inserts):
        if n in failing:
            assert isinstance(outcome, ValueError), n
        else:
            assert outcome == n
    assert await database.read(read) == {f"k{n}": (n, 1) for n in range(40) if n not in failing}
    if ordered:
        _, seen = await asyncio.gather(database.run(bump), database.read(read))
        assert seen == {f"k{n}": (n, 2) for n in range(40) if n not in failing}
    # A failure of one unit left the next ones free to use the same key.
    assert await database.run(unit(8 + 100)) == 108
    assert await database.run(lambda tx: tx.claim("summer", ["e1", "e1", "e2"])) == {"e1", "e2"}
    claims = await asyncio.gather(
        *(database.run(lambda tx: tx.claim("summer", ["e2", "e3"])) for _ in range(3))
    )
    assert sorted(claims, key=len) == [set(), set(), {"e3"}], "one claim per id"
    if ordered:
        assert claims[0] == {"e3"}, "claimed in the order they were made"


async def test_inbox_and_outbox_rows_read_back_with_their_times_and_fields(
    database: Database,
) -> None:
    # SQLite writes these rows through the driver, not SQLAlchemy: what is read back
    # through SQLAlchemy (explain, the relay) must be what its own writes would give.
    await database.migrate(MIGRATIONS)
    before = datetime.now(UTC).replace(microsecond=0)
    first = [f"id-{n}" for n in range(300)]
    assert await database.run(lambda tx: tx.claim("summer", first)) == set(first)
    # More than one statement's worth of rows, half of them claimed already.
    second = [f"id-{n}" for n in range(150, 750)]
    fresh = await database.run(lambda tx: tx.claim("summer", second))
    assert fresh == {f"id-{n}" for n in range(300, 750)}
    cause = sample("order.created", "k", 1)
    events = [sample("inventory.low", f"sku-{n}", n) for n in range(3)]
    events = [e.model_copy(update={"causationid": cause.id}) for e in events]
    await database.run(lambda tx: tx.stage(events))
    await database.run(lambda tx: tx.stage(events[:1]))  # staged again: the same event

    def rows(connection: sa.Connection) -> tuple[list[Any], list[Any]]:
        inbox = connection.execute(sa.select(tables.inbox)).all()
        outbox = connection.execute(sa.select(tables.outbox).order_by(tables.outbox.c.seq)).all()
        return inbox, outbox

    inbox, outbox = await database.read(rows)
    assert len(inbox) == 750
    after = datetime.now(UTC)
    for row in inbox:
        at = row.applied_at if row.applied_at.tzinfo else row.applied_at.replace(tzinfo=UTC)
        assert before <= at <= after, row
    assert [(r.event_id, r.type, r.subject, r.causation_id) for r in outbox] == [
        (e.id, e.type, e.subject, cause.id) for e in events
    ]
    for row, event in zip(outbox, events, strict=True):
        assert CATALOG_CODEC.decode(row.body).model_dump() == event.model_dump()
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        assert before <= created <= after
        assert row.published_at is None
        assert row.unroutable_since is None
    if database.dialect == "sqlite":
        # Stored as the same text SQLAlchemy writes, so that times compare in SQL too.
        def texts(tx: Transaction) -> list[str]:
            row = {"consumer": "sa", "event_id": "x", "applied_at": after}
            tx.execute(sa.insert(tables.inbox).values(**row))
            query = "SELECT applied_at FROM agentbus_inbox WHERE event_id IN ('x', 'id-0')"
            query += " UNION ALL SELECT created_at FROM agentbus_outbox"
            return [row[0] for row in tx.connection.exec_driver_sql(query)]

        written = await database.run(texts)
        shapes = {re.sub(r"\d", "9", text) for text in written}
        assert len(written) == 5
        assert len(shapes) == 1, written


async def test_a_log_position_commits_with_the_effects_of_its_batch_or_not_at_all(
    database: Database,
) -> None:
    holder: list[StoreBinding] = []
    service = summer(holder)
    store = holder[0]
    await store.attach(database, None)
    assert service.positions is store
    handler = service.routes["order.created"].handler
    p0 = LogPartition("shop.summer", "shop.order.created", 0)
    p1 = LogPartition("shop.summer", "shop.order.created", 1)

    def context(positions: dict[LogPartition, int]) -> Context:
        ctx = Context(service.name, service.source)
        ctx.positions = positions
        return ctx

    good = sample("order.created", "a", 1)
    await handler([good], context({p0: 8}))
    poisoned = context({p0: 12, p1: 3})
    with pytest.raises(PermanentError):
        await handler(
            [sample("order.created", "b", 2), sample("order.created", "poison", 3)], poisoned
        )
    # Rolled back with the batch: neither the first event's effect nor either position.
    assert await read_totals(database) == {"a": (1, 1)}
    partitions = [(p0.topic, 0), (p1.topic, 1), (p1.topic, 2)]
    assert await store.stored_positions("shop.summer", partitions) == {(p0.topic, 0): 8}

    # A batch whose position was taken before an earlier-committed one's never moves it back.
    await handler([sample("order.created", "c", 4)], context({p0: 5, p1: 3}))
    assert await store.stored_positions("shop.summer", partitions) == {
        (p0.topic, 0): 8,
        (p1.topic, 1): 3,
    }
    await handler([sample("order.created", "d", 5)], context({p0: 9}))
    assert (await store.stored_positions("shop.summer", partitions))[(p0.topic, 0)] == 9
    # Another group keeps positions of its own, and a duplicate still moves the position.
    await handler([good], context({LogPartition("other", p0.topic, 0): 2, p0: 10}))
    assert await store.stored_positions("other", partitions) == {(p0.topic, 0): 2}
    assert (await store.stored_positions("shop.summer", partitions))[(p0.topic, 0)] == 10
    assert (await read_totals(database))["a"] == (1, 1)


async def test_rows_by_key_read_in_key_order_and_update_in_one_statement(
    database: Database,
) -> None:
    """What a batch reads and writes a row per key with: any number of keys (more than
    one SQLite statement takes), keys absent or repeated, values set per row."""
    await database.migrate(MIGRATIONS)
    keys = [f"k{n:04d}" for n in range(600)]

    def fill(tx: Transaction) -> None:
        tx.execute(
            sa.insert(totals), [{"key": k, "sum": n, "count": 0} for n, k in enumerate(keys)]
        )

    await database.run(fill)
    wanted = [*reversed(keys[::2]), "absent", keys[0]]

    def read_and_update(tx: Transaction) -> list[tuple[Any, ...]]:
        found = tx.rows([totals.c.key, totals.c.sum], totals.c.key, wanted, lock=True)
        tx.update(totals.c.key, [totals.c.sum, totals.c.count], [(k, -s, 1) for k, s in found])
        return found

    found = await database.run(read_and_update)
    assert [k for k, _ in found] == sorted(keys[::2])
    assert all(s == int(k[1:]) for k, s in found)
    after = await read_totals(database)
    assert after[keys[2]] == (-2, 1)
    assert after[keys[3]] == (3, 0)  # not asked for: unchanged
    assert sum(count for _, count in after.values()) == 300
    assert await database.run(lambda tx: tx.rows([totals.c.key], totals.c.key, [])) == []


ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("note", sa.String(50), nullable=True, server_default="none"),
)
LEDGER = Migration("ledger", 1, "ledger", create_tables(ledger))


async def test_rows_added_and_removed_by_the_adapter_read_back_as_sqlalchemys_own(
    database: Database,
) -> None:
    """Decimals, times and a column left to its default go in through the adapter and
    come back, by the adapter and by SQLAlchemy, as SQLAlchemy's own statements write
    and read them; a conflict fails the unit unless it asked to skip what is there."""
    await database.migrate([LEDGER])
    at = datetime(2026, 12, 7, 9, 30, 15, 250000, tzinfo=UTC)
    columns = [ledger.c.key, ledger.c.amount, ledger.c.at]

    def fill(tx: Transaction) -> None:
        tx.add(columns, [("a", Decimal("19.99"), at), ("b", Decimal("0.10"), None)])
        tx.execute(sa.insert(ledger), {"key": "c", "amount": Decimal("5.25"), "at": at})
        tx.add(
            columns, [("a", Decimal("1.00"), None), ("d", Decimal("2.50"), at)], skip_existing=True
        )
        tx.update(ledger.c.key, [ledger.c.amount], [("b", Decimal("0.20"))])

    await database.run(fill)
    readable = [ledger.c.key, ledger.c.amount, ledger.c.at, ledger.c.note]
    by_adapter = await database.run(
        lambda tx: tx.rows(readable, ledger.c.key, ["a", "b", "c", "d"])
    )
    by_sqlalchemy = await database.read(
        lambda c: [tuple(r) for r in c.execute(sa.select(*readable).order_by(ledger.c.key))]
    )
    assert by_adapter == by_sqlalchemy
    read_at = by_sqlalchemy[2][2]  # SQLite keeps no zone: SQLAlchemy reads the time naive
    assert read_at == (at if read_at.tzinfo else at.replace(tzinfo=None))
    assert by_adapter == [
        ("a", Decimal("19.99"), read_at, "none"),  # the second "a" was passed over
        ("b", Decimal("0.20"), None, "none"),
        ("c", Decimal("5.25"), read_at, "none"),
        ("d", Decimal("2.50"), read_at, "none"),
    ]
    with pytest.raises(sa.exc.IntegrityError):
        await database.run(
            lambda tx: tx.add(columns, [("e", Decimal(1), at), ("a", Decimal(2), at)])
        )
    assert await database.run(lambda tx: tx.rows([ledger.c.key], ledger.c.key, ["e"])) == []

    def remove(tx: Transaction) -> list[tuple[Any, ...]]:
        tx.remove(ledger.c.key, ["a", "c", "absent"])
        return tx.rows([ledger.c.key], ledger.c.key, ["a", "b", "c", "d"])

    assert await database.run(remove) == [("b",), ("d",)]


async def test_a_connection_lost_under_a_claim_is_retried_as_the_outage_it_is(
    database: Database,
) -> None:
    """The adapter runs its statements on the driver's own connection; a connection the
    server ends in the middle of one must still read as SQLAlchemy's outage, which the
    database retries on a new connection, not as an unknown error that fails the batch."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite has no server to end a connection")
    await database.migrate(MIGRATIONS)
    ended: list[int] = []

    def claim(tx: Transaction) -> set[str]:
        if not ended:
            pid = tx.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with database.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            ended.append(pid)
        return tx.claim("lost-connection", ["e1", "e2"])

    assert await database.run(claim) == {"e1", "e2"}
    assert ended, "the first attempt's connection was ended"


async def test_a_connection_lost_under_the_relays_read_is_retried_as_the_outage_it_is(
    database: Database,
) -> None:
    """As above, for a read outside any transaction: what the relay runs after commits."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite has no server to end a connection")
    await database.migrate(MIGRATIONS)
    ended: list[int] = []

    def unpublished(connection: sa.Connection) -> int:
        if not ended:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            connection.rollback()
            with database.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            ended.append(pid)
        return len(database.adapter.unpublished(connection, 10))

    assert await database.read(unpublished) == 0
    assert ended, "the first attempt's connection was ended"


async def test_the_adapters_raise_the_databases_errors_as_sqlalchemys(database: Database) -> None:
    """Whatever the database, a failing statement of the adapter surfaces as SQLAlchemy's
    error, which the outage retries and the relay's recovery tell apart; the driver's own
    error class (sqlite3's, psycopg's) would escape them."""
    await database.migrate(MIGRATIONS)
    outbox = database.adapter
    await database.run(lambda tx: tables.outbox.drop(tx.connection))
    with pytest.raises(sa.exc.DBAPIError) as raised:
        await database.read(lambda connection: outbox.unpublished(connection, 10))
    assert "agentbus_outbox" in str(raised.value.orig)


async def test_a_units_writes_read_back_within_it_and_vanish_with_it(database: Database) -> None:
    """PostgreSQL's adapter holds writes nobody reads the answer of (state updates,
    outbox rows) until the commit, to send them with it. Whatever the database: a unit
    reads its own writes, through the adapter or SQLAlchemy; a unit that fails, even
    only when those writes finally run, leaves nothing; the next unit on the same
    connection carries nothing of it."""
    await database.migrate(MIGRATIONS)
    await database.run(
        lambda tx: tx.execute(sa.insert(totals), [{"key": "a", "sum": 1, "count": 0}])
    )
    staged = sample("inventory.low", "a", 1)

    def write_then_read(tx: Transaction) -> tuple[list[tuple[Any, ...]], int, int]:
        tx.update(totals.c.key, [totals.c.sum], [("a", 10)])
        through_adapter = tx.rows([totals.c.key, totals.c.sum], totals.c.key, ["a"])
        tx.stage([staged])
        outbox = tx.execute(sa.select(sa.func.count()).select_from(tables.outbox)).scalar_one()
        tx.update(totals.c.key, [totals.c.sum], [("a", 11)])
        summed = tx.execute(sa.select(totals.c.sum).where(totals.c.key == "a")).scalar_one()
        return through_adapter, outbox, summed

    assert await database.run(write_then_read) == ([("a", 10)], 1, 11)

    def undone_to_a_savepoint(tx: Transaction) -> None:
        nested = tx.connection.begin_nested()
        tx.stage([sample("inventory.low", "c", 3)])
        tx.update(totals.c.key, [totals.c.sum], [("a", 12)])
        nested.rollback()

    await database.run(undone_to_a_savepoint)

    def fails_after_writing(tx: Transaction) -> None:
        tx.update(totals.c.key, [totals.c.sum], [("a", 99)])
        tx.stage([sample("inventory.low", "b", 2)])
        raise ValueError("the handler fails after its writes")

    with pytest.raises(ValueError, match="fails after"):
        await database.run(fails_after_writing)

    never_made = sa.Table(
        "never_made",
        sa.MetaData(),
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("n", sa.Integer),
    )

    def fails_at_its_last_write(tx: Transaction) -> None:
        tx.claim("summer", ["e-failing"])
        tx.update(totals.c.key, [totals.c.sum], [("a", 98)])
        tx.update(never_made.c.key, [never_made.c.n], [("x", 1)])

    with pytest.raises(sa.exc.DBAPIError):
        await database.run(fails_at_its_last_write)
    assert await database.run(lambda tx: tx.claim("summer", ["e-failing"])) == {"e-failing"}

    def on_one_connection() -> None:
        # The database drops a connection a unit failed on; one kept must not carry the
        # failed transaction's writes into the next.
        with database.connect() as connection:
            with contextlib.suppress(ValueError), connection.begin():
                database.adapter.update(connection, totals.c.key, [totals.c.sum], [("a", 97)])
                raise ValueError("rolled back")
            with connection.begin():
                database.adapter.claim(connection, "summer", ["e-next"], datetime.now(UTC))

    await asyncio.to_thread(on_one_connection)
    assert (await read_totals(database))["a"] == (11, 0)

    assert await database.read(outbox_ids) == [staged.id]


@pytest.mark.parametrize("writes", ["held", "sent"])
async def test_a_connection_lost_under_held_writes_is_an_outage(
    database: Database, writes: str
) -> None:
    """PostgreSQL's held writes go with the next statement or the commit. The server
    ending the session, while they are held or after a statement sent them, must read
    as the outage it is (with them held, sending them fails; once sent, SQLAlchemy's
    own statement fails and marks the connection invalid): the unit runs again on a
    new connection and its writes land once, not never."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite has no server to end a connection")
    await database.migrate(MIGRATIONS)
    await database.run(
        lambda tx: tx.execute(sa.insert(totals), [{"key": "a", "sum": 1, "count": 0}])
    )
    staged = sample("inventory.low", "a", 1)
    ended: list[int] = []

    def backend(tx: Transaction) -> int:
        return int(tx.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    def unit(tx: Transaction) -> set[str]:
        pid = backend(tx) if writes == "held" else 0
        fresh = tx.claim("summer", ["held-1"])
        tx.update(totals.c.key, [totals.c.sum], [("a", 5)])
        tx.stage([staged])
        pid = pid or backend(tx)  # a statement now sends what was held
        if not ended:
            with database.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            ended.append(pid)
        tx.execute(sa.select(totals.c.sum).where(totals.c.key == "a")).scalar_one()
        return fresh

    assert await database.run(unit) == {"held-1"}
    assert ended, "the first attempt's connection was ended"
    assert (await read_totals(database))["a"] == (5, 0)
    assert await database.read(outbox_ids) == [staged.id]
