"""PostgreSQL: the engine and the adapter.

Written through SQLAlchemy with a bind parameter per row, each batch size is a
new statement: rendered in Python, parsed and planned by the server, never
prepared. The adapter's statements are fixed texts that take their rows as
arrays (`unnest`, `= ANY`), so psycopg prepares each after a few runs and a batch
leaves the interpreter a list per column. Measured on the inventory service:
0.61 of a plain aio-pika consumer before, see benchmarks/README.md
(consumer_throughput) for after.

Statements whose answer nobody reads (a batch's state update, its outbox rows,
the relay's marks) wait and go with whatever runs next on the connection, in one
pipeline: the commit, usually, so a batch's last writes and its COMMIT cost one
round trip rather than three. Anything else that runs on the connection sends
them first, so a transaction still reads what it wrote.

Each service has a schema of its own in a shared database: the adapter names
its tables in it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql

from agentbus.errors import ConfigurationError
from agentbus.store import tables
from agentbus.store.adapter import OutboxRow, Unpublished, binders, processed, read_back, readers
from agentbus.store.lease import AdvisoryLease, Lease
from agentbus.store.migrations import Migration, run_migrations, translated_schema

MIGRATION_LOCK = 0x61_67_65_6E_74  # "agent": one advisory lock for all migrations


def engine(url: str) -> sa.Engine:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ConfigurationError("DATABASE_URL must be a postgresql:// URL")
    made = sa.create_engine(
        f"postgresql+psycopg://{rest}", pool_size=4, max_overflow=4, pool_pre_ping=True
    )
    sa.event.listen(made, "before_cursor_execute", _send_deferred_before)
    sa.event.listen(made, "commit", _commit_with_deferred)
    sa.event.listen(made, "rollback", _drop_deferred)
    return made


_DEFERRED = "agentbus.deferred"
Deferred = list[tuple[sql.Composed, Sequence[Any]]]


def _defer(connection: sa.Connection, statement: sql.Composed, parameters: Sequence[Any]) -> None:
    """Run `statement` with what runs next on the connection (see the module's doc)."""
    deferred: Deferred = connection.info.setdefault(_DEFERRED, [])
    deferred.append((statement, parameters))


def _send_deferred(connection: sa.Connection, *, commit: bool = False) -> None:
    """Send the deferred statements in one pipeline, the COMMIT too if `commit`."""
    if connection.invalidated:
        # Its statements went with the lost session (and asking for `info` here would
        # reconnect it inside the failed transaction).
        return
    deferred: Deferred | None = connection.info.pop(_DEFERRED, None)
    if not deferred:
        return
    driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    statement, parameters = deferred[0]
    try:
        with driver.pipeline():
            for statement, parameters in deferred:
                driver.execute(statement, parameters)
            if commit:
                driver.commit()  # what SQLAlchemy's own commit then finds done
    except psycopg.Error as exc:
        raise _wrapped(connection, statement, parameters, exc) from exc


def _send_deferred_before(connection: sa.Connection, *_: Any) -> None:
    _send_deferred(connection)


def _commit_with_deferred(connection: sa.Connection) -> None:
    _send_deferred(connection, commit=True)


def _drop_deferred(connection: sa.Connection) -> None:
    if not connection.invalidated:  # else they went with the session
        connection.info.pop(_DEFERRED, None)


def _execute(
    connection: sa.Connection, statement: sql.Composed, parameters: Sequence[Any]
) -> psycopg.Cursor[Any]:
    """On psycopg's own connection (SQLAlchemy's execution of it cost a tenth of the
    inventory service's throughput), its errors wrapped as SQLAlchemy's would be: the
    database's outage retries and the relay's recovery look for those, and a lost
    connection says so."""
    _send_deferred(connection)
    driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    try:
        return driver.execute(statement, parameters)
    except psycopg.Error as exc:
        raise _wrapped(connection, statement, parameters, exc) from exc


def _wrapped(
    connection: sa.Connection,
    statement: sql.Composed,
    parameters: Sequence[Any],
    exc: psycopg.Error,
) -> sa.exc.StatementError:
    lost = connection.dialect.is_disconnect(cast(Any, exc), connection.connection, None)
    return sa.exc.DBAPIError.instance(
        str(statement), parameters, exc, psycopg.Error, connection_invalidated=lost
    )


class PostgresAdapter:
    def __init__(self, schema: str | None) -> None:
        self.schema = schema

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def locked(self, query: sa.Select[Any], *, skip_locked: bool) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=skip_locked)

    def lease(self, engine: sa.Engine, schema: str | None) -> Lease:
        return AdvisoryLease(engine, f"agentbus.relay.{schema}")

    def create_schema(self, engine: sa.Engine, schema: str) -> None:
        # IF NOT EXISTS does not guard against a creator whose transaction is still
        # open: ours waits for it, then fails on the unique index. The schema exists
        # by then, so trying once more succeeds.
        for attempt in range(3):
            try:
                with engine.begin() as connection:
                    self._lock_migrations(connection)
                    connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                return
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise

    def migrate(
        self, connection: sa.Connection, migrations: Sequence[Migration]
    ) -> list[Migration]:
        self._lock_migrations(connection)
        schema = translated_schema(connection)
        if schema is not None:
            # Alembic's own statements do not read the schema map; until the transaction
            # ends (the pooled connection keeps its own path) they reach the schema's.
            connection.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
        return run_migrations(connection, migrations)

    @staticmethod
    def _lock_migrations(connection: sa.Connection) -> None:
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})

    def outage(self, exc: sa.exc.DBAPIError) -> bool:
        # The server restarting or failing over: any operational error may heal.
        return True

    def claim(
        self, connection: sa.Connection, consumer: str, ids: Sequence[str], at: datetime
    ) -> set[str]:
        rows = _execute(connection, _claim(self.schema), (consumer, at, list(ids)))
        return {row[0] for row in rows}

    def stage(self, connection: sa.Connection, rows: Sequence[OutboxRow], at: datetime) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        _defer(connection, _stage(self.schema), (at, *columns))

    def unpublished(self, connection: sa.Connection, limit: int) -> list[Unpublished]:
        found = _execute(connection, _unpublished(self.schema), (limit,))
        return [Unpublished(*row) for row in found]

    def mark_published(self, connection: sa.Connection, seqs: Sequence[int], at: datetime) -> None:
        _defer(connection, _mark(self.schema), (at, list(seqs)))

    def rows(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        key: sa.Column[Any],
        keys: Sequence[Any],
        *,
        lock: bool,
    ) -> list[tuple[Any, ...]]:
        names = tuple(column.name for column in columns)
        query = _select(self.schema, key.table.name, names, key.name, lock)
        cursor = _execute(connection, query, (list(keys),))
        found = cursor.fetchall()
        reading = readers(
            connection.dialect,
            columns,
            lambda: [column.type_code for column in cursor.description or ()],
        )
        return found if reading is None else read_back(found, reading)

    def update(
        self,
        connection: sa.Connection,
        key: sa.Column[Any],
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        typed = _typed(connection.dialect, (key, *columns))
        _defer(
            connection,
            _update(self.schema, key.table.name, typed),
            _arrays(connection, (key, *columns), rows),
        )

    def add(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
        *,
        skip_existing: bool,
    ) -> None:
        typed = _typed(connection.dialect, tuple(columns))
        statement = _insert(self.schema, columns[0].table.name, typed, skip_existing)
        _defer(connection, statement, _arrays(connection, columns, rows))

    def remove(self, connection: sa.Connection, key: sa.Column[Any], keys: Sequence[Any]) -> None:
        typed = _typed(connection.dialect, (key,))
        _defer(connection, _delete(self.schema, key.table.name, typed[0]), (list(keys),))


@functools.cache
def _typed(dialect: sa.Dialect, columns: tuple[sa.Column[Any], ...]) -> tuple[tuple[str, str], ...]:
    """Each column's name and its type as PostgreSQL spells it, for the arrays' casts."""
    return tuple((c.name, c.type.compile(dialect=dialect)) for c in columns)


def _arrays(
    connection: sa.Connection, columns: Sequence[sa.Column[Any]], rows: Sequence[Sequence[Any]]
) -> list[list[Any]]:
    """One array per column, each value written as SQLAlchemy's statements write it."""
    values = processed(rows, binders(connection.dialect, columns))
    return [list(column) for column in zip(*values, strict=True)]


# Statements are built once per schema and shape, and psycopg prepares them by text.
def _name(schema: str | None, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


@functools.cache
def _claim(schema: str | None) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (consumer, event_id, applied_at)"
        " SELECT %s, id, %s FROM unnest(%s::text[]) AS id"
        " ON CONFLICT DO NOTHING RETURNING event_id"
    ).format(_name(schema, tables.inbox.name))


@functools.cache
def _stage(schema: str | None) -> sql.Composed:
    # Rows keep their order in the outbox's sequence: the relay publishes by it.
    return sql.SQL(
        "INSERT INTO {} (event_id, type, subject, body, created_at, causation_id)"
        " SELECT e.event_id, e.type, e.subject, e.body, %s, e.causation_id"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
        " WITH ORDINALITY AS e(event_id, type, subject, body, causation_id, n)"
        " ORDER BY e.n ON CONFLICT (event_id) DO NOTHING"
    ).format(_name(schema, tables.outbox.name))


@functools.cache
def _unpublished(schema: str | None) -> sql.Composed:
    return sql.SQL(
        "SELECT seq, event_id, type, subject, body, unroutable_since FROM {}"
        " WHERE published_at IS NULL ORDER BY seq LIMIT %s"
    ).format(_name(schema, tables.outbox.name))


@functools.cache
def _mark(schema: str | None) -> sql.Composed:
    return sql.SQL("UPDATE {} SET published_at = %s WHERE seq = ANY(%s::bigint[])").format(
        _name(schema, tables.outbox.name)
    )


@functools.cache
def _select(
    schema: str | None, table: str, columns: tuple[str, ...], key: str, lock: bool
) -> sql.Composed:
    query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s) ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        _name(schema, table),
        sql.Identifier(key),
        sql.Identifier(key),
    )
    return query + sql.SQL(" FOR UPDATE") if lock else query


@functools.cache
def _update(schema: str | None, table: str, typed: tuple[tuple[str, str], ...]) -> sql.Composed:
    """`UPDATE` from one array per column, the key's first."""
    names = [sql.Identifier(name) for name, _ in typed]
    arrays = sql.SQL(", ").join(sql.SQL("%s::" + kind + "[]") for _, kind in typed)
    return sql.SQL("UPDATE {} AS t SET {} FROM unnest({}) AS u({}) WHERE t.{} = u.{}").format(
        _name(schema, table),
        sql.SQL(", ").join(sql.SQL("{} = u.{}").format(n, n) for n in names[1:]),
        arrays,
        sql.SQL(", ").join(names),
        names[0],
        names[0],
    )


@functools.cache
def _insert(
    schema: str | None, table: str, typed: tuple[tuple[str, str], ...], skip_existing: bool
) -> sql.Composed:
    """`INSERT` from one array per column."""
    names = [sql.Identifier(name) for name, _ in typed]
    arrays = sql.SQL(", ").join(sql.SQL("%s::" + kind + "[]") for _, kind in typed)
    statement = sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
        _name(schema, table), sql.SQL(", ").join(names), arrays
    )
    return statement + sql.SQL(" ON CONFLICT DO NOTHING") if skip_existing else statement


@functools.cache
def _delete(schema: str | None, table: str, typed: tuple[str, str]) -> sql.Composed:
    name, kind = typed
    return sql.SQL("DELETE FROM {} WHERE {} = ANY(%s::" + kind + "[])").format(
        _name(schema, table), sql.Identifier(name)
    )
