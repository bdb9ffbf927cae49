"""What a database adapter does for the statements every batch runs.

Every transaction claims its ids and most stage events; the relay reads and marks
the outbox after every commit that staged rows; a service like inventory reads,
locks and updates a row per key. Through SQLAlchemy's execution these cost the
interpreter more than the database's own work (on SQLite 24 us against 6 for a
claim), and the event loop needs the interpreter. So each database has one
adapter (`agentbus.store.sqlite`, `agentbus.store.postgres`), chosen where the
database is opened, that runs them on its driver with statements built from the
tables' own definitions. Nothing else branches on the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa

from agentbus.store.lease import Lease
from agentbus.store.migrations import Migration


class OutboxRow(NamedTuple):
    event_id: str
    type: str
    subject: str | None
    body: bytes
    causation_id: str | None


class Unpublished(NamedTuple):
    seq: int
    event_id: str
    type: str
    subject: str | None
    body: bytes
    unroutable_since: datetime | None


class Adapter(Protocol):
    def insert(self, table: sa.Table) -> Any:
        """An INSERT of this database's dialect, which knows ON CONFLICT."""

    def locked(self, query: sa.Select[Any], *, skip_locked: bool) -> sa.Select[Any]:
        """`query` taking its rows for the transaction, against other writers of them
        (with `skip_locked`, passing over rows another transaction holds)."""

    def lease(self, engine: sa.Engine, schema: str | None) -> Lease:
        """What keeps the outbox relay of this database to one process at a time."""

    def create_schema(self, engine: sa.Engine, schema: str) -> None:
        """Create the schema a service's tables live in, if it is not there."""

    def migrate(
        self, connection: sa.Connection, migrations: Sequence[Migration]
    ) -> list[Migration]:
        """Apply what has not run of `migrations` inside the caller's transaction, with
        concurrent migrators kept out until it ends and unqualified names meaning the
        connection's own schema's tables. Returns what ran."""

    def outage(self, exc: sa.exc.DBAPIError) -> bool:
        """Whether a failure may heal by waiting (the server restarting, failing over)
        rather than being the statement's own fault."""

    def claim(
        self, connection: sa.Connection, consumer: str, ids: Sequence[str], at: datetime
    ) -> set[str]:
        """Insert inbox rows; return the ids that were not there."""

    def stage(self, connection: sa.Connection, rows: Sequence[OutboxRow], at: datetime) -> None:
        """Append outbox rows in their order; an event id staged before is skipped."""

    def unpublished(self, connection: sa.Connection, limit: int) -> list[Unpublished]:
        """The first `limit` outbox rows not yet published, in their order."""

    def mark_published(self, connection: sa.Connection, seqs: Sequence[int], at: datetime) -> None:
        """Mark outbox rows published."""

    def rows(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        key: sa.Column[Any],
        keys: Sequence[Any],
        *,
        lock: bool,
    ) -> list[tuple[Any, ...]]:
        """`columns` of the rows whose `key` is in `keys`, ordered by it; with `lock`,
        locked for the transaction in that order (competing writers never deadlock)."""

    def update(
        self,
        connection: sa.Connection,
        key: sa.Column[Any],
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Set `columns` of the row each `(key, *values)` names."""

    def add(
        self,
        connection: sa.Connection,
        columns: Sequence[sa.Column[Any]],
        rows: Sequence[Sequence[Any]],
        *,
        skip_existing: bool,
    ) -> None:
        """Insert `rows` of `columns` (one table's); with `skip_existing`, a row that
        conflicts with one there is passed over."""

    def remove(self, connection: sa.Connection, key: sa.Column[Any], keys: Sequence[Any]) -> None:
        """Delete the rows whose `key` is in `keys`."""


Processor = Callable[[Any], Any]


def binders(dialect: sa.Dialect, columns: Sequence[sa.Column[Any]]) -> tuple[Processor, ...] | None:
    """How each column's type writes a value on this dialect, as SQLAlchemy's own
    statements write it (SQLite keeps times as formatted text, decimals as floats);
    None when every value goes to the driver as it is."""
    key = ("bind", dialect.name, dialect.driver, tuple(columns))
    if key not in _PROCESSORS:
        found = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        _PROCESSORS[key] = _all_or_none(found)
    return _PROCESSORS[key]


def readers(
    dialect: sa.Dialect,
    columns: Sequence[sa.Column[Any]],
    kinds: Callable[[], Sequence[Any]] | None = None,
) -> tuple[Processor, ...] | None:
    """How each column's type reads a driver's value back on this dialect; None when
    every value comes back as the driver gives it. `kinds` gives the driver's type code
    of each column (its cursor's description), asked for only the first time."""
    key = ("result", dialect.name, dialect.driver, tuple(columns))
    if key not in _PROCESSORS:
        codes = kinds() if kinds is not None else [None] * len(columns)
        found = [
            c.type.dialect_impl(dialect).result_processor(dialect, code)
            for c, code in zip(columns, codes, strict=True)
        ]
        _PROCESSORS[key] = _all_or_none(found)
    return _PROCESSORS[key]


def processed(
    rows: Sequence[Sequence[Any]], processors: tuple[Processor, ...] | None
) -> Sequence[Sequence[Any]]:
    """`rows` as the driver takes them: the same rows where no column needs a processor."""
    if processors is None:
        return rows
    return read_back(rows, processors)


def read_back(
    rows: Sequence[Sequence[Any]], processors: tuple[Processor, ...]
) -> list[tuple[Any, ...]]:
    """`rows` with each value through its column's processor (None values stay None)."""
    return [
        tuple(None if v is None else p(v) for p, v in zip(processors, row, strict=True))
        for row in rows
    ]


_PROCESSORS: dict[tuple[Any, ...], tuple[Processor, ...] | None] = {}


def _all_or_none(found: Sequence[Processor | None]) -> tuple[Processor, ...] | None:
    if all(p is None for p in found):
        return None
    return tuple(p if p is not None else _same for p in found)


def _same(value: Any) -> Any:
    return value
