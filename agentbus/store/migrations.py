"""Versioned migrations that upgrade a database in place, written with Alembic's operations.

Each component (the platform, each service, the agent runtime, an agent's projection)
numbers its migrations from 1. A step is a function of Alembic's `Operations`
(`op.create_table`, `op.add_column`, `op.create_index`, `op.batch_alter_table` where
SQLite must rebuild a table), and spells out the tables as that version has them, never
the live models: a model that gains a column without a step of its own must differ from
a migrated database, and `tests/contract/test_schema_drift.py` compares the two with
Alembic's autogenerate on SQLite and PostgreSQL.

Why a list of steps in Python and not Alembic script directories: every database in use
already records what has run in `agentbus_migrations`, per component and version, and
an agent's package declares its own steps beside its tables. Keeping that ledger keeps
what it means (nothing runs twice, nothing is stamped by hand), keeps components
independent of each other without one Alembic version table and revision graph each,
and keeps one lock around all of them: `run_migrations` applies the rest in order inside
the caller's transaction, safe when several processes start at once (an advisory lock
on PostgreSQL, the write lock SQLite's BEGIN IMMEDIATE takes).

On PostgreSQL a service's tables live in a schema of its own, reached through
`schema_translate_map`. Alembic's own statements (ALTER TABLE ... ADD COLUMN) do not
read that map, so the migration's transaction also sets its `search_path` to the
schema: a step names tables without a schema and reaches the service's own either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.store import tables

if TYPE_CHECKING:
    from alembic.operations import Operations


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    description: str
    apply: Callable[[Operations], None]


def create_tables(*table_list: sa.Table) -> Callable[[Operations], None]:
    """A step that creates tables and their indexes as given.

    Give it tables that will not change, or copies frozen as of this version: a step
    made from a live model creates whatever the model has today, so the drift check
    could not see a column added to it without a migration.
    """

    def apply(op: Operations) -> None:
        from alembic.operations import ops

        for table in table_list:
            op.invoke(ops.CreateTableOp.from_table(table))
            for index in sorted(table.indexes, key=lambda index: index.name or ""):
                op.invoke(ops.CreateIndexOp.from_index(index))

    return apply


def _datetime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _platform_v1(op: Operations) -> None:
    op.create_table(
        "agentbus_inbox",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("applied_at", _datetime(), nullable=False),
    )
    op.create_table(
        "agentbus_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(256), nullable=False, unique=True),
        sa.Column("type", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(512), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _datetime(), nullable=False),
        sa.Column("published_at", _datetime(), nullable=True),
    )
    unpublished = sa.text("published_at IS NULL")
    op.create_index(
        "agentbus_outbox_unpublished",
        "agentbus_outbox",
        ["seq"],
        postgresql_where=unpublished,
        sqlite_where=unpublished,
    )


def _platform_v2(op: Operations) -> None:
    # As released: declared TIMESTAMP on SQLite, where the model says DATETIME (version 5).
    kind = _datetime().with_variant(sa.TIMESTAMP(), "sqlite")
    op.add_column("agentbus_outbox", sa.Column("unroutable_since", kind, nullable=True))


def _platform_v3(op: Operations) -> None:
    op.add_column("agentbus_outbox", sa.Column("causation_id", sa.String(256), nullable=True))
    op.create_index("agentbus_outbox_causation", "agentbus_outbox", ["causation_id"])
    # Rows written before: their cause is in the body.
    outbox = sa.table(
        "agentbus_outbox",
        sa.column("seq", sa.Integer()),
        sa.column("body", sa.LargeBinary()),
        sa.column("causation_id", sa.String()),
    )
    connection = op.get_bind()
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


def _platform_v4(op: Operations) -> None:
    op.create_table(
        "agentbus_offsets",
        sa.Column("consumer_group", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer(), primary_key=True),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _datetime(), nullable=False),
    )


def _platform_v5(op: Operations) -> None:
    # SQLite changes a declared type only by rebuilding the table: batch mode copies
    # the rows, indexes and constraints into a new one. PostgreSQL got the model's type
    # from version 2, and batch mode there is one ALTER to the type it already has.
    with op.batch_alter_table("agentbus_outbox") as batch:
        batch.alter_column(
            "unroutable_since",
            type_=_datetime(),
            existing_type=sa.TIMESTAMP(),
            existing_nullable=True,
        )


PLATFORM: tuple[Migration, ...] = (
    Migration("agentbus", 1, "inbox and outbox", _platform_v1),
    Migration("agentbus", 2, "outbox rows remember being unroutable", _platform_v2),
    Migration("agentbus", 3, "outbox rows name their cause", _platform_v3),
    Migration("agentbus", 4, "positions reached in logs", _platform_v4),
    Migration("agentbus", 5, "outbox unroutable times declared as the model says", _platform_v5),
)


def applied_versions(connection: sa.Connection, component: str) -> set[int]:
    table = tables.migrations_table
    rows = connection.execute(sa.select(table.c.version).where(table.c.component == component))
    return {row[0] for row in rows}


def translated_schema(connection: sa.Connection) -> str | None:
    """The schema `connection` puts unqualified tables in (None: the default one)."""
    found = connection.get_execution_options().get("schema_translate_map", {}).get(None)
    return found if isinstance(found, str) else None


def run_migrations(connection: sa.Connection, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply what has not run yet, inside the caller's transaction. Returns what ran.

    The caller has serialized the transaction against other migrators
    (`Transaction.migrate` does, through its database's adapter)."""
    by_component: dict[str, list[Migration]] = {}
    for migration in migrations:
        by_component.setdefault(migration.component, []).append(migration)
    for component, steps in by_component.items():
        versions = [step.version for step in steps]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migrations of {component!r} must be numbered 1..n in order")
    tables.migrations_table.create(connection, checkfirst=True)
    pending = [
        step
        for component, steps in by_component.items()
        for done in [applied_versions(connection, component)]
        for step in steps
        if step.version not in done
    ]
    if not pending:
        return []
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    op = Operations(MigrationContext.configure(connection))
    for step in pending:
        step.apply(op)
        connection.execute(
            sa.insert(tables.migrations_table).values(
                component=step.component,
                version=step.version,
                description=step.description,
                applied_at=datetime.now(UTC),
            )
        )
    return pending
