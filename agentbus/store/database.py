"""A service's database: SQLite (WAL) by default, PostgreSQL at scale."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agentbus.envelope import Event, EventCodec
from agentbus.errors import ConfigurationError
from agentbus.store import tables
from agentbus.store.migrations import PLATFORM, Migration, run_migrations

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Transaction:
    """One database transaction of a service: inbox claims, state, outbox rows."""

    def __init__(self, connection: AsyncConnection, codec: EventCodec) -> None:
        self.connection = connection
        self._codec = codec

    @property
    def dialect(self) -> str:
        return self.connection.dialect.name

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that knows ON CONFLICT, for the dialect in use."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def claim(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Record event ids in the inbox; return those not applied before.

        Two transactions claiming the same id at once serialize on the primary
        key: the second sees the first's row once it commits and claims nothing.
        """
        unique = list(dict.fromkeys(event_ids))
        if not unique:
            return set()
        now = datetime.now(UTC)
        statement = (
            self.insert(tables.inbox)
            .values([{"consumer": consumer, "event_id": i, "applied_at": now} for i in unique])
            .on_conflict_do_nothing()
            .returning(tables.inbox.c.event_id)
        )
        rows = await self.connection.execute(statement)
        return {row[0] for row in rows}

    async def stage(self, events: Sequence[Event[Any]]) -> None:
        """Write events to the outbox; the relay publishes them after commit."""
        if not events:
            return
        now = datetime.now(UTC)
        statement = (
            self.insert(tables.outbox)
            .values(
                [
                    {
                        "event_id": event.id,
                        "type": event.type,
                        "subject": event.subject,
                        "body": self._codec.encode(event),
                        "created_at": now,
                    }
                    for event in events
                ]
            )
            # A deterministic id staged again (a replayed trigger) is the same event.
            .on_conflict_do_nothing(index_elements=[tables.outbox.c.event_id])
        )
        await self.connection.execute(statement)


class Database:
    """An async engine bound to one service's schema or file."""

    def __init__(self, engine: AsyncEngine, codec: EventCodec, *, schema: str | None) -> None:
        self.engine = engine
        self.codec = codec
        self.schema = schema

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            if self.schema is not None:
                connection = await connection.execution_options(
                    schema_translate_map={None: self.schema}
                )
            yield connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction: committed when the block exits, rolled back on error."""
        async with self.connect() as connection, connection.begin():
            yield Transaction(connection, self.codec)

    async def migrate(self, migrations: Sequence[Migration] = ()) -> list[Migration]:
        """Create or upgrade the platform tables and the service's own."""
        if self.schema is not None:
            async with self.engine.begin() as connection:
                await connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        async with self.connect() as connection, connection.begin():
            return await run_migrations(connection, [*PLATFORM, *migrations])

    async def close(self) -> None:
        await self.engine.dispose()


def open_database(service: str, codec: EventCodec, *, url: str | None, data_dir: Path) -> Database:
    """The service's database: `url` (PostgreSQL) or a SQLite file under `data_dir`.

    On PostgreSQL each service gets a schema of its own name in the given database.
    """
    name = service.replace("-", "_").lower()
    if not _NAME.match(name):
        raise ConfigurationError(f"service name {service!r} cannot name a database schema")
    if url:
        return Database(_postgres_engine(url), codec, schema=name)
    data_dir.mkdir(parents=True, exist_ok=True)
    return Database(_sqlite_engine(data_dir / f"{name}.db"), codec, schema=None)


def _postgres_engine(url: str) -> AsyncEngine:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ConfigurationError("DATABASE_URL must be a postgresql:// URL")
    return create_async_engine(
        f"postgresql+asyncpg://{rest}", pool_size=5, max_overflow=5, pool_pre_ping=True
    )


def _sqlite_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @sa_event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE can be issued:
        # a write transaction holds the write lock from its start, so two processes
        # never deadlock upgrading read locks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
