"""Versioned migrations that upgrade a database in place.

Each component (the platform, each service) numbers its migrations from 1. A
database records which have run in `agentbus_migrations`; `migrate` runs the
rest in order, each in its own transaction, and is safe when several processes
start at once (an advisory lock on PostgreSQL, a write lock on SQLite).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agentbus.store import tables


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    description: str
    apply: Callable[[AsyncConnection], Awaitable[None]]


def create_tables(*table_list: sa.Table) -> Callable[[AsyncConnection], Awaitable[None]]:
    """A migration step that creates tables (and their indexes)."""

    def create(sync: sa.Connection) -> None:
        for table in table_list:
            table.create(sync)

    async def apply(connection: AsyncConnection) -> None:
        await connection.run_sync(create)

    return apply


PLATFORM: tuple[Migration, ...] = (
    Migration("agentbus", 1, "inbox and outbox", create_tables(tables.inbox, tables.outbox)),
)

_LOCK_KEY = 0x61_67_65_6E_74  # "agent": one advisory lock for all migrations


async def applied_versions(connection: AsyncConnection, component: str) -> set[int]:
    table = tables.migrations_table
    rows = await connection.execute(
        sa.select(table.c.version).where(table.c.component == component)
    )
    return {row[0] for row in rows}


async def run_migrations(
    connection: AsyncConnection, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply what has not run yet, inside the caller's transaction. Returns what ran."""
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    await connection.run_sync(lambda sync: tables.migrations_table.create(sync, checkfirst=True))
    ran: list[Migration] = []
    by_component: dict[str, list[Migration]] = {}
    for migration in migrations:
        by_component.setdefault(migration.component, []).append(migration)
    for component, steps in by_component.items():
        versions = [step.version for step in steps]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migrations of {component!r} must be numbered 1..n in order")
        done = await applied_versions(connection, component)
        for step in steps:
            if step.version in done:
                continue
            await step.apply(connection)
            await connection.execute(
                sa.insert(tables.migrations_table).values(
                    component=component,
                    version=step.version,
                    description=step.description,
                    applied_at=datetime.now(UTC),
                )
            )
            ran.append(step)
    return ran
