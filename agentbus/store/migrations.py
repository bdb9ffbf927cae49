"""Versioned migrations that upgrade a database in place.

Each component (the platform, each service) numbers its migrations from 1. A
database records which have run in `agentbus_migrations`; `migrate` runs the
rest in order inside one transaction, safe when several processes start at once
(an advisory lock on PostgreSQL, the write lock on SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from agentbus.store import tables


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def create_tables(*table_list: sa.Table) -> Callable[[sa.Connection], None]:
    """A migration step that creates tables (and their indexes)."""

    def apply(connection: sa.Connection) -> None:
        for table in table_list:
            table.create(connection)

    return apply


def add_column(table: sa.Table, column: str) -> Callable[[sa.Connection], None]:
    """A migration step that adds `table.c[column]` to a table created without it.

    The column must be nullable or have a server default: rows already there need a value.
    """

    def apply(connection: sa.Connection) -> None:
        schema = connection.get_execution_options().get("schema_translate_map", {}).get(None)
        name = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
        kind = table.c[column].type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f'ALTER TABLE {name} ADD COLUMN "{column}" {kind}'))

    return apply


def without(table: sa.Table, *columns: str) -> sa.Table:
    """`table` as an earlier version had it, for the migration that created that version."""
    return sa.Table(
        table.name,
        sa.MetaData(),
        *(column._copy() for column in table.columns if column.name not in columns),
    )


def _create_outbox_v1(connection: sa.Connection) -> None:
    # Version 1 of the outbox, as it was: version 2 adds to it in place.
    v1 = without(tables.outbox, "unroutable_since", "causation_id")
    sa.Index(
        "agentbus_outbox_unpublished",
        v1.c.seq,
        postgresql_where=v1.c.published_at.is_(None),
        sqlite_where=v1.c.published_at.is_(None),
    )
    tables.inbox.create(connection)
    v1.create(connection)


def _outbox_unroutable(connection: sa.Connection) -> None:
    schema = connection.get_execution_options().get("schema_translate_map", {}).get(None)
    table = f'"{schema}".agentbus_outbox' if schema else "agentbus_outbox"
    kind = "TIMESTAMP WITH TIME ZONE" if connection.dialect.name == "postgresql" else "TIMESTAMP"
    connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN unroutable_since {kind}"))


def _outbox_causation(connection: sa.Connection) -> None:
    add_column(tables.outbox, "causation_id")(connection)
    schema = connection.get_execution_options().get("schema_translate_map", {}).get(None)
    table = f'"{schema}".agentbus_outbox' if schema else "agentbus_outbox"
    connection.execute(sa.text(f"CREATE INDEX agentbus_outbox_causation ON {table} (causation_id)"))
    # Rows written before: their cause is in the body.
    outbox = tables.outbox
    rows = connection.execute(sa.select(outbox.c.seq, outbox.c.body)).all()
    updates = [
        {"row": row.seq, "cause": cause}
        for row in rows
        if (cause := _causation_in(row.body)) is not None
    ]
    if updates:
        connection.execute(
            sa.update(outbox)
            .where(outbox.c.seq == sa.bindparam("row"))
            .values(causation_id=sa.bindparam("cause")),
            updates,
        )


def _causation_in(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    found = value.get("causationid") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


PLATFORM: tuple[Migration, ...] = (
    Migration("agentbus", 1, "inbox and outbox", _create_outbox_v1),
    Migration("agentbus", 2, "outbox rows remember being unroutable", _outbox_unroutable),
    Migration("agentbus", 3, "outbox rows name their cause", _outbox_causation),
    Migration("agentbus", 4, "positions reached in logs", create_tables(tables.offsets)),
)

LOCK_KEY = 0x61_67_65_6E_74  # "agent": one advisory lock for all migrations


def applied_versions(connection: sa.Connection, component: str) -> set[int]:
    table = tables.migrations_table
    rows = connection.execute(sa.select(table.c.version).where(table.c.component == component))
    return {row[0] for row in rows}


def run_migrations(connection: sa.Connection, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply what has not run yet, inside the caller's transaction. Returns what ran."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    tables.migrations_table.create(connection, checkfirst=True)
    by_component: dict[str, list[Migration]] = {}
    for migration in migrations:
        by_component.setdefault(migration.component, []).append(migration)
    ran: list[Migration] = []
    for component, steps in by_component.items():
        versions = [step.version for step in steps]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migrations of {component!r} must be numbered 1..n in order")
        done = applied_versions(connection, component)
        for step in steps:
            if step.version in done:
                continue
            step.apply(connection)
            connection.execute(
                sa.insert(tables.migrations_table).values(
                    component=component,
                    version=step.version,
                    description=step.description,
                    applied_at=datetime.now(UTC),
                )
            )
            ran.append(step)
    return ran
