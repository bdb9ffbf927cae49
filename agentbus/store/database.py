"""A service's database: SQLite (WAL) by default, PostgreSQL at scale.

Units of work are plain synchronous functions run in the database's own worker
thread: a whole batch transaction costs one hop off the event loop, and the
driver works while the loop keeps reading the broker. (Measured: an async driver
paid a thread hop per statement and fetch, five times the cost of the work.)

SQLite has one writer at a time, so concurrent units of work (an agent's runs, a
service's lanes) gain nothing from transactions of their own: the units queued
when the worker takes its turn share one transaction and one commit. Should any
of them fail, the transaction is rolled back and each unit runs again alone, so
a failure stays with its own unit (failures are rare: the common path pays no
savepoints). On PostgreSQL each unit keeps its own transaction, so row locks
stay short and ordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from agentbus.envelope import Event, EventCodec
from agentbus.errors import ConfigurationError, one_line
from agentbus.store import sqlite as sqlite_store
from agentbus.store import tables
from agentbus.store.adapter import Adapter, OutboxRow
from agentbus.store.migrations import PLATFORM, Migration
from agentbus.store.worker import Job, LoopWorker, SerialWorker
from agentbus.transport.base import LogPartition

T = TypeVar("T")
_WRITE = "write"
_READ = "read"
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Transaction:
    """One database transaction of a service: inbox claims, state, outbox rows."""

    def __init__(self, connection: sa.Connection, codec: EventCodec, adapter: Adapter) -> None:
        self.connection = connection
        self._codec = codec
        self._adapter = adapter

    @property
    def codec(self) -> EventCodec:
        """How events are written: for a service that keeps one to act on later."""
        return self._codec

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that knows ON CONFLICT, for the dialect in use."""
        return self._adapter.insert(table)

    def execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        return self.connection.execute(statement, parameters)

    def locked(self, query: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        """`query`, its rows taken for this transaction against other writers of them
        (`skip_locked`: rows another transaction holds are passed over, not waited for).
        Where the database writes one transaction at a time, that is the query itself."""
        return self._adapter.locked(query, skip_locked=skip_locked)

    def migrate(self, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply what has not run of `migrations`, with other migrators kept out until
        this transaction ends. Returns what ran."""
        return self._adapter.migrate(self.connection, migrations)

    def once(self, key: Hashable, build: Callable[[Transaction], Any]) -> Any:
        """`build(tx)`, made once per dialect and kept: a statement used on every event
        costs more to build than to run. It must take its values as bind parameters."""
        cache_key = (self.connection.dialect.name, key)
        found = _BUILT.get(cache_key)
        if found is None:
            found = _BUILT[cache_key] = build(self)
        return found

    def claim(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Record event ids in the inbox; return those not applied before.

        Two transactions claiming the same id at once serialize on the primary
        key: the second sees the first's row once it commits and claims nothing.
        """
        unique = list(dict.fromkeys(event_ids))
        if not unique:
            return set()
        return self._adapter.claim(self.connection, consumer, unique, datetime.now(UTC))

    def stage(self, events: Sequence[Event[Any]]) -> None:
        """Write events to the outbox; the relay publishes them after commit."""
        if not events:
            return
        encode = self._codec.encode
        rows = [OutboxRow(e.id, e.type, e.subject, encode(e), e.causationid) for e in events]
        self._adapter.stage(self.connection, rows, datetime.now(UTC))

    def rows(
        self,
        columns: Sequence[sa.Column[Any]],
        key: sa.Column[Any],
        keys: Sequence[Any],
        *,
        lock: bool = False,
    ) -> list[tuple[Any, ...]]:
        """`columns` of the rows of `key`'s table whose key is in `keys`, ordered by it.

        For a batch that reads a row per key: one statement however many keys. With
        `lock` the rows stay locked until commit, taken in key order so that
        competing instances serialize per key and never deadlock.
        """
        if not keys:
            return []
        return self._adapter.rows(self.connection, columns, key, keys, lock=lock)

    def update(
        self, key: sa.Column[Any], columns: Sequence[sa.Column[Any]], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Set `columns` (in that order) of the row each `(key, *values)` names."""
        if rows:
            self._adapter.update(self.connection, key, columns, rows)

    def add(
        self,
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
        *,
        skip_existing: bool = False,
    ) -> None:
        """Insert `rows`, values of `columns` (one table's) in that order; the columns
        left out take the database's default. With `skip_existing`, a row that conflicts
        with one there is passed over; else that fails the unit."""
        if rows:
            self._adapter.add(self.connection, columns, rows, skip_existing=skip_existing)

    def remove(self, key: sa.Column[Any], keys: Sequence[Any]) -> None:
        """Delete the rows of `key`'s table whose key is in `keys`."""
        if keys:
            self._adapter.remove(self.connection, key, keys)

    def advance(self, positions: Mapping[LogPartition, int]) -> None:
        """Store where each partition is to be read from next. A position never moves
        back: a batch that took its position before another batch of the partition
        committed may commit after it, and every position stored is one below which
        all records have taken effect, so the greater is as safe and wastes less."""
        if not positions:
            return
        now = datetime.now(UTC)
        self.connection.execute(
            self.once(_advance, _advance),
            [
                {
                    "consumer_group": where.group,
                    "topic": where.topic,
                    "partition": where.partition,
                    "next_offset": offset,
                    "updated_at": now,
                }
                for where, offset in positions.items()
            ],
        )


_BUILT: dict[tuple[str, Hashable], Any] = {}


def _end_read(connection: sa.Connection) -> None:
    """End the transaction a read began, so the next job can begin its own."""
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        connection.rollback()


def _advance(tx: Transaction) -> Any:
    table = tables.offsets
    insert = tx.insert(table)
    return insert.on_conflict_do_update(
        index_elements=[table.c.consumer_group, table.c.topic, table.c.partition],
        set_={"next_offset": insert.excluded.next_offset, "updated_at": insert.excluded.updated_at},
        where=table.c.next_offset < insert.excluded.next_offset,
    )


def stored_positions(
    connection: sa.Connection, group: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The positions stored for a group's partitions (those that have one)."""
    table = tables.offsets
    wanted = set(partitions)
    rows = connection.execute(
        sa.select(table.c.topic, table.c.partition, table.c.next_offset).where(
            table.c.consumer_group == group
        )
    )
    return {(t, p): o for t, p, o in rows if (t, p) in wanted}


class Database:
    """An engine bound to one service's schema or file, with its worker thread."""

    def __init__(
        self,
        engine: sa.Engine,
        codec: EventCodec,
        *,
        schema: str | None,
        adapter: Adapter,
        workers: int = 1,
        outage_limit: float = 120.0,
        grouped: Literal["thread", "loop"] | None = None,
    ) -> None:
        self.engine = engine
        self.codec = codec
        self.schema = schema
        self.adapter = adapter
        self.outage_limit = outage_limit
        # SQLite: one worker whose turns group the queued units (see the module's notes),
        # in a thread of its own, or on the loop when no one else uses the file.
        # PostgreSQL: a pool of threads, each unit in its own transaction.
        self._worker: SerialWorker | LoopWorker | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The worker's connection, kept from turn to turn (a checkout from the pool
        # and its reset cost more than most turns' work); only the worker touches it.
        self._held: sa.Connection | None = None
        # PostgreSQL: each pool thread keeps its connection between units in the same
        # way. Checked out per unit, it cost a ping (pool_pre_ping) and a reset per
        # batch: two more waits on the server in a transaction of about six.
        self._per_thread = threading.local()
        self._thread_held: list[sa.Connection] = []
        self._thread_lock = threading.Lock()
        if grouped == "loop":
            self._worker = LoopWorker(self._run_jobs)
        elif grouped == "thread":
            self._worker = SerialWorker("agentbus-db", self._run_jobs)
        else:
            self._executor = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="agentbus-db"
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection in this thread (use inside `run`/`read` functions)."""
        with self._open_connection() as connection:
            yield connection

    def _open_connection(self) -> sa.Connection:
        connection = self.engine.connect()
        if self.schema is not None:
            connection = connection.execution_options(schema_translate_map={None: self.schema})
        return connection

    async def run(self, work: Callable[[Transaction], T]) -> T:
        """Run `work(tx)` in one write transaction, off the event loop: commit or roll back.

        While the database is unreachable (a restart, a fail-over) the transaction is
        tried again in place, for up to `outage_limit` seconds: the caller keeps its
        order, nothing is acked meanwhile. `work` may therefore run more than once
        (a commit whose answer was lost included), so it must have no effect outside
        the transaction; the inbox makes a repeat of an applied batch a no-op.
        """

        worker = self._worker
        if worker is not None:
            return await self._through_outages(lambda: worker.submit(work, _WRITE))

        def unit() -> T:
            connection = self._thread_connection()
            try:
                with connection.begin():
                    return work(Transaction(connection, self.codec, self.adapter))
            except BaseException:
                # Whatever failed may have left the session unusable (a restart, a
                # broken protocol state): the next unit starts from a fresh checkout.
                self._drop_thread_connection(connection)
                raise

        return await self._through_outages(lambda: self._call(unit))

    def _thread_connection(self) -> sa.Connection:
        connection: sa.Connection | None = getattr(self._per_thread, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = self._per_thread.connection = self._open_connection()
            with self._thread_lock:
                self._thread_held.append(connection)
        return connection

    def _drop_thread_connection(self, connection: sa.Connection) -> None:
        self._per_thread.connection = None
        with self._thread_lock:
            if connection in self._thread_held:
                self._thread_held.remove(connection)
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            connection.close()

    async def read(self, query: Callable[[sa.Connection], T]) -> T:
        """Run `query(connection)` off the event loop, without a write transaction."""

        def unit() -> T:
            with self.connect() as connection:
                return query(connection)

        worker = self._worker
        if worker is not None:
            return await self._through_outages(lambda: worker.submit(query, _READ))
        return await self._through_outages(lambda: self._call(unit))

    async def _through_outages(self, attempt: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_limit
        delay = 0.1
        while True:
            try:
                return await attempt()
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if not self._unreachable(exc) or loop.time() + delay > deadline:
                    raise
                log.warning(
                    "database unreachable (%s); trying again in %.1fs",
                    one_line(str(exc.orig or exc), 200),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _unreachable(self, exc: sa.exc.DBAPIError) -> bool:
        return bool(exc.connection_invalidated) or self.adapter.outage(exc)

    async def _call(self, unit: Callable[[], T]) -> T:
        if self._worker is not None:
            result: T = await self._worker.call_alone(unit)
            return result
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, unit)

    def _run_jobs(self, jobs: Sequence[Job]) -> None:
        """One turn of the SQLite worker, on one connection: reads alone, runs of
        writes in one transaction.

        Jobs keep their order: a read queued after a write runs after its commit.
        """
        connection = self._held
        if connection is None or connection.closed or connection.invalidated:
            connection = self._held = self._open_connection()
        try:
            start = 0
            while start < len(jobs):
                job = jobs[start]
                if job.kind != _WRITE:
                    try:
                        job.result = job.call(connection)
                    except Exception as exc:
                        job.error = exc
                    finally:
                        _end_read(connection)
                    start += 1
                    continue
                end = start + 1
                while end < len(jobs) and jobs[end].kind == _WRITE:
                    end += 1
                self._write_together(connection, jobs[start:end])
                start = end
        finally:
            if connection.invalidated or connection.in_transaction():
                self._release_held()

    def _release_held(self) -> None:
        connection, self._held = self._held, None
        if connection is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.close()

    def _dispose(self) -> None:
        self._release_held()
        with self._thread_lock:
            held, self._thread_held = self._thread_held, []
        for connection in held:
            # Idle between units: the pool's threads have no work left by now.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.close()
        self.engine.dispose()

    def _write_together(self, connection: sa.Connection, jobs: Sequence[Job]) -> None:
        if len(jobs) > 1:
            try:
                with connection.begin():
                    tx = Transaction(connection, self.codec, self.adapter)
                    for job in jobs:
                        job.result = job.call(tx)
                return
            except Exception:
                # One of them failed, or the commit did: nothing of it holds. Units of
                # work may run more than once (see `run`), so each now runs alone and
                # the failure stays with the one it belongs to.
                log.debug("a shared transaction of %d units failed; running each alone", len(jobs))
        for job in jobs:
            job.result = job.error = None
            try:
                with connection.begin():
                    job.result = job.call(Transaction(connection, self.codec, self.adapter))
            except Exception as exc:
                job.result = None
                job.error = exc

    async def migrate(self, migrations: Sequence[Migration] = ()) -> list[Migration]:
        """Create or upgrade the platform tables and the service's own."""
        if self.schema is not None:
            schema = self.schema
            await self._call(lambda: self.adapter.create_schema(self.engine, schema))
        return await self.run(lambda tx: tx.migrate([*PLATFORM, *migrations]))

    async def close(self) -> None:
        await self._call(self._dispose)
        if self._worker is not None:
            self._worker.shutdown()
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def open_database(
    service: str,
    codec: EventCodec,
    *,
    url: str | None,
    data_dir: Path,
    outage_limit: float = 120.0,
    on_loop: bool = False,
    scratch: bool = False,
) -> Database:
    """The service's database: `url` (PostgreSQL) or a SQLite file under `data_dir`.

    On PostgreSQL each service gets a schema of its own name in the given database.
    `outage_limit`: how long to keep trying while it is unreachable (0 for a command
    that should say so at once). `on_loop`: run SQLite's units of work on the event
    loop instead of a thread, for files no other process or thread uses. `scratch`: a
    SQLite file thrown away at the run's end, written without syncing to the disk.
    """
    name = service.replace("-", "_").lower()
    if not _NAME.match(name):
        raise ConfigurationError(f"service name {service!r} cannot name a database schema")
    if url:
        # Imported where chosen: psycopg and its dialect cost a SQLite process 0.2 s to load.
        from agentbus.store import postgres as postgres_store

        return Database(
            postgres_store.engine(url),
            codec,
            schema=name,
            adapter=postgres_store.PostgresAdapter(name),
            workers=2,
            outage_limit=outage_limit,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    return Database(
        sqlite_store.engine(data_dir / f"{name}.db", scratch=scratch),
        codec,
        schema=None,
        adapter=sqlite_store.SqliteAdapter(),
        outage_limit=outage_limit,
        grouped="loop" if on_loop else "thread",
    )


def sqlite_path(service: str, data_dir: Path) -> Path:
    return data_dir / f"{service.replace('-', '_').lower()}.db"
