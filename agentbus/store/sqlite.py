"""SQLite: the engine (WAL, immediate write transactions) and the adapter.

The adapter runs its statements on SQLite's own connection inside the caller's
transaction. Times are written and read by SQLAlchemy's own processors, so they
read back as its writes do.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import sqlite

from agentbus.store import tables
from agentbus.store.adapter import OutboxRow, Unpublished, binders, processed, read_back, readers
from agentbus.store.lease import FileLease, Lease
from agentbus.store.migrations import Migration, run_migrations

_DIALECT = sqlite.dialect()
P = ParamSpec("P")
R = TypeVar("R")
_ROWS_PER_STATEMENT = 250  # bind values stay well under SQLite's limit (32,766)


def engine(path: Path, *, scratch: bool = False) -> sa.Engine:
    """`scratch`: a file nobody needs after a crash (an offline replay's), written
    without syncing to the disk."""
    created = sa.create_engine(f"sqlite:///{path}")
    synchronous = "OFF" if scratch else "NORMAL"

    @sa_event.listens_for(created, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE can be issued:
        # a write transaction holds the write lock from its start, so two processes
        # never deadlock upgrading read locks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(created, "begin")
    def on_begin(connection: Any) -> None:
        # Straight to the driver (every transaction begins here), its errors wrapped
        # as SQLAlchemy's would be, for the callers that tell them apart.
        try:
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc

    return created


def _time_writer() -> Callable[[datetime], Any]:
    column_type = tables.inbox.c.applied_at.type.dialect_impl(_DIALECT)
    process = column_type.bind_processor(_DIALECT)
    if process is None:  # SQLAlchemy stores SQLite times as text it formats itself
        raise RuntimeError("SQLAlchemy has no SQLite time format")
    return process


_write_time = _time_writer()
_read_time = tables.outbox.c.unroutable_since.type.dialect_impl(_DIALECT).result_processor(
    _DIALECT, None
)


def _driver(connection: sa.Connection) -> sqlite3.Connection:
    return cast(sqlite3.Connection, connection.connection.driver_connection)


def _wrapped(method: Callable[P, R]) -> Callable[P, R]:
    """The driver's errors raised as SQLAlchemy's would be, as the PostgreSQL adapter
    raises them: the database's outage retries look for those, whatever the database."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(method.__name__, None, exc, sqlite3.Error) from exc

    return call


class SqliteAdapter:
    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def locked(self, query: sa.Select[Any], *, skip_locked: bool) -> sa.Select[Any]:
        # Every write transaction begins IMMEDIATE, holding the file's write lock
        # from its start: no other writer runs meanwhile, so no row needs a lock.
        return query

    def lease(self, engine: sa.Engine, schema: str | None) -> Lease:
        database = engine.url.database
        if not database:
            raise ValueError("a SQLite relay needs a database file")
        return FileLease(Path(f"{database}.relay.lock"))

    def create_schema(self, engine: sa.Engine, schema: str) -> None:
        raise NotImplementedError("a SQLite file is the service's own: it has no schemas")

    def migrate(
        self, connection: sa.Connection, migrations: Sequence[Migration]
    ) -> list[Migration]:
        # BEGIN IMMEDIATE already keeps other migrators out until the commit.
        return _migrate(connection, migrations)

    def outage(self, exc: sa.exc.DBAPIError) -> bool:
        # "database is locked" is contention, which the busy timeout already waited out.
        return False

    @_wrapped
    def claim(
        self, connection: sa.Connection, consumer: str, ids: Sequence[str], at: datetime
    ) -> set[str]:
        driver = _driver(connection)
        when = _write_time(at)
        fresh: set[str] = set()
        step = _ROWS_PER_STATEMENT
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            values: list[str] = []
            for event_id in chunk:
                values += (consumer, event_id, when)
            fresh.update(row[0] for row in driver.execute(_claim(len(chunk)), values))
        return fresh

    @_wrapped
    def stage(self, connection: sa.Connection, rows: Sequence[OutboxRow], at: datetime) -> None:
        when = _write_time(at)
        _driver(connection).executemany(
            _STAGE, [(r.event_id, r.type, r.subject, r.body, when, r.causation_id) for r in rows]
        )

    @_wrapped
    def unpublished(self, connection: sa.Connection, limit: int) -> list[Unpublished]:
        read_time = _read_time
        return [
            Unpublished(
                seq,
                event_id,
                kind,
                subject,
                bytes(body),
                None if since is None or read_time is None else read_time(since),
            )
            for seq, event_id, kind, subject, body, since in _driver(connection).execute(
                _UNPUBLISHED, (limit,)
            )
        ]

    @_wrapped
    def mark_published(self, connection: sa.Connection, seqs: Sequence[int], at: datetime) -> None:
        driver = _driver(connection)
        when = _write_time(at)
        step = _ROWS_PER_STATEMENT
        for start in range(0, len(seqs), step):
            chunk = seqs[start : start + step]
            driver.execute(_mark(len(chunk)), (when, *chunk))

    @_wrapped
    def rows(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        key: sa.Column[Any],
        keys: Sequence[Any],
        *,
        lock: bool,
    ) -> list[tuple[Any, ...]]:
        # The write transaction is exclusive already: `lock` asks nothing more here.
        driver = _driver(connection)
        names = tuple(column.name for column in columns)
        found: list[tuple[Any, ...]] = []
        step = _ROWS_PER_STATEMENT
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            found += driver.execute(_select(key.table.name, names, key.name, len(chunk)), chunk)
        if len(keys) > step:
            at = names.index(key.name) if key.name in names else None
            if at is not None:
                found.sort(key=lambda row: row[at])
        reading = readers(_DIALECT, columns)
        return found if reading is None else read_back(found, reading)

    @_wrapped
    def update(
        self,
        connection: sa.Connection,
        key: sa.Column[Any],
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        names = tuple(column.name for column in columns)
        values = processed(rows, binders(_DIALECT, (key, *columns)))
        _driver(connection).executemany(
            _update(key.table.name, names, key.name), [(*row[1:], row[0]) for row in values]
        )

    @_wrapped
    def add(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
        *,
        skip_existing: bool,
    ) -> None:
        names = tuple(column.name for column in columns)
        _driver(connection).executemany(
            _insert(columns[0].table.name, names, skip_existing),
            processed(rows, binders(_DIALECT, columns)),
        )

    @_wrapped
    def remove(self, connection: sa.Connection, key: sa.Column[Any], keys: Sequence[Any]) -> None:
        driver = _driver(connection)
        step = _ROWS_PER_STATEMENT
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            driver.execute(_delete(key.table.name, key.name, len(chunk)), chunk)


def _table(name: str) -> str:
    return f'"{name}"'


_INBOX = tables.inbox.name
_OUTBOX = tables.outbox.name
_STAGE = (
    f"INSERT INTO {_OUTBOX} (event_id, type, subject, body, created_at, causation_id)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_UNPUBLISHED = (
    f"SELECT seq, event_id, type, subject, body, unroutable_since FROM {_OUTBOX}"
    " WHERE published_at IS NULL ORDER BY seq LIMIT ?"
)


@functools.cache
def _claim(rows: int) -> str:
    return (
        f"INSERT INTO {_INBOX} (consumer, event_id, applied_at) VALUES "
        + ", ".join(["(?, ?, ?)"] * rows)
        + " ON CONFLICT DO NOTHING RETURNING event_id"
    )


@functools.cache
def _mark(rows: int) -> str:
    marks = ", ".join("?" * rows)
    return f"UPDATE {_OUTBOX} SET published_at = ? WHERE seq IN ({marks})"


@functools.cache
def _select(table: str, columns: tuple[str, ...], key: str, keys: int) -> str:
    marks = ", ".join("?" * keys)
    listed = ", ".join(f'"{c}"' for c in columns)
    return f'SELECT {listed} FROM {_table(table)} WHERE "{key}" IN ({marks}) ORDER BY "{key}"'


@functools.cache
def _update(table: str, columns: tuple[str, ...], key: str) -> str:
    assignments = ", ".join(f'"{c}" = ?' for c in columns)
    return f'UPDATE {_table(table)} SET {assignments} WHERE "{key}" = ?'


@functools.cache
def _insert(table: str, columns: tuple[str, ...], skip_existing: bool) -> str:
    listed = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    skip = " ON CONFLICT DO NOTHING" if skip_existing else ""
    return f"INSERT INTO {_table(table)} ({listed}) VALUES ({marks}){skip}"


@functools.cache
def _delete(table: str, key: str, keys: int) -> str:
    marks = ", ".join("?" * keys)
    return f'DELETE FROM {_table(table)} WHERE "{key}" IN ({marks})'


# -- fresh files --------------------------------------------------------------------
# Fresh SQLite files built from the statements of one migrated before them.
#
# An eval replays hundreds of worlds, each into fresh files for five services, and
# building a file's tables step by step from its migrations (Alembic's operations,
# and a table rebuild in the platform's fifth step) took about 15 ms a file: a
# twentieth of a short replay. So the first fresh file of a set of migrations in a
# process is migrated step by step and its schema and rows are kept as SQL
# (`iterdump`); a later fresh file of the same set runs that SQL instead, in under a
# millisecond, and records the same migrations as applied. A file that holds any
# table already is migrated step by step, as always.


@dataclass(frozen=True)
class _Template:
    statements: tuple[str, ...]  # the schema and any rows the steps wrote
    ran: tuple[Migration, ...]  # what the steps applied, in their order


_TEMPLATES: dict[tuple[Migration, ...], _Template] = {}
_LOCK = threading.Lock()


def _migrate(connection: sa.Connection, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply what has not run of `migrations` inside the caller's transaction; a fresh
    file from the kept statements of the same migrations where there are some."""
    driver = _driver(connection)
    fresh = driver.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
    key = tuple(migrations)
    with _LOCK:
        template = _TEMPLATES.get(key) if fresh else None
    if template is None:
        ran = run_migrations(connection, migrations)
        if fresh and ran:
            kept = _Template(_statements(driver), tuple(ran))
            with _LOCK:
                _TEMPLATES.setdefault(key, kept)
        return ran
    # The dump lists tables by name, a child's rows maybe before its parent's: the
    # foreign keys are checked at the commit, once all are in (the pragma ends with it).
    driver.execute("PRAGMA defer_foreign_keys = ON")
    for statement in template.statements:
        driver.execute(statement)
    _record(connection, template.ran)
    return list(template.ran)


def _statements(driver: sqlite3.Connection) -> tuple[str, ...]:
    # The migrations' own rows are written again with the time they are applied.
    own = f'INSERT INTO "{tables.migrations_table.name}"'
    kept = [
        statement
        for statement in driver.iterdump()
        if statement not in ("BEGIN TRANSACTION;", "COMMIT;") and not statement.startswith(own)
    ]
    # Every table before any row: a row's foreign key needs its parent table to exist.
    schema = [statement for statement in kept if statement.startswith("CREATE ")]
    return (*schema, *(statement for statement in kept if not statement.startswith("CREATE ")))


def _record(connection: sa.Connection, ran: Sequence[Migration]) -> None:
    now = datetime.now(UTC)
    connection.execute(
        sa.insert(tables.migrations_table),
        [
            {
                "component": step.component,
                "version": step.version,
                "description": step.description,
                "applied_at": now,
            }
            for step in ran
        ],
    )
