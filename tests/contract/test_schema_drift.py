"""The migrations make the schema the models describe, on SQLite and PostgreSQL.

For every database a component gets (the platform's tables, plus a service's, or the
agent runtime's and an agent's), an empty database is migrated, or one migrated to an
older version is upgraded, and Alembic's autogenerate must find no difference from the
declared tables: tables, columns, types (compare_type), nullability, server defaults,
indexes and unique constraints, and (added by `schema_drift`) partial index predicates.

What Alembic cannot compare and this does not see: a renamed table or column (it reads
as one dropped and one added, still a difference), CHECK constraints, client-side
defaults (`default=` lives in Python, not in the database), and on SQLite the length
of a VARCHAR, which SQLite does not keep apart from its text.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentbus.envelope import EventCodec
from agentbus.store import Database, Migration, open_database
from agentbus.store import tables as platform
from agentbus.store.drift import declared, schema_drift
from agentbus.store.migrations import PLATFORM
from consumers.api import tables as api_tables
from consumers.review import readmodel
from tests.contract.catalog import CATALOG

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Component:
    """The modules whose migrations one database runs, and tables kept from elsewhere."""

    modules: tuple[str, ...]
    borrowed: tuple[sa.Table, ...] = field(default=())
    steps: tuple[Migration, ...] = field(default=())  # another component's, run here too

    def migrations(self) -> list[Migration]:
        owned = [step for m in self.modules for step in importlib.import_module(m).MIGRATIONS]
        return [*owned, *self.steps]

    def metadata(self) -> sa.MetaData:
        owned: list[Iterable[sa.Table]] = [
            importlib.import_module(m).metadata.tables.values() for m in self.modules
        ]
        return declared(platform.metadata.tables.values(), *owned, self.borrowed)


RUNTIME = "agentbus.agent.tables"
DATABASES = {
    "platform": Component(()),
    "orders": Component(("consumers.orders.service",)),
    "payments": Component(("consumers.payments.service",)),
    "purchasing": Component(("consumers.purchasing.service",)),
    "notifications": Component(("consumers.notifications.service",)),
    "inventory": Component(("consumers.inventory.tables",)),
    "shipping": Component(("consumers.shipping.tables",)),
    "review": Component(("consumers.review.readmodel",)),
    # The console's database as the API decides in it too (consumers/api/decision_store.py).
    "review-with-api": Component(
        ("consumers.review.readmodel",), (api_tables.idempotency,), api_tables.DECISION_KEYS
    ),
    "api": Component(("consumers.api.tables",), (readmodel.suggestions, readmodel.audit)),
    "agent": Component((RUNTIME,)),
    "restock": Component((RUNTIME, "tools.projections.restock")),
    "substitute": Component((RUNTIME, "tools.projections.substitute")),
}
BACKENDS = ["sqlite", "postgresql"]


@asynccontextmanager
async def empty_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    url = request.getfixturevalue("database_url") if backend == "postgresql" else None
    name = f"drift_{uuid.uuid4().hex[:8]}"
    database = open_database(name, EventCodec(CATALOG), url=url, data_dir=tmp_path)
    try:
        yield database
    finally:
        if database.schema is not None:
            schema = database.schema
            await database.read(
                lambda c: (
                    c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')) and c.commit()
                )
            )
        await database.close()


async def migrate_only(database: Database, steps: Sequence[Migration]) -> None:
    """Run exactly `steps`, as an older release would have (the platform's included)."""
    if database.schema is not None:
        schema = database.schema
        await database.read(
            lambda c: c.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')) and c.commit()
        )
    await database.run(lambda tx: tx.migrate(steps))


def drift(database: Database, metadata: sa.MetaData) -> list[Any]:
    with database.engine.connect() as connection:
        return schema_drift(connection, metadata, database.schema)


@pytest.mark.parametrize("name", DATABASES)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_migrated_database_matches_its_models(
    backend: str, name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    component = DATABASES[name]
    async with empty_database(backend, tmp_path, request) as database:
        ran = await database.migrate(component.migrations())
        assert ran, "an empty database runs every step"
        assert drift(database, component.metadata()) == []


def older_versions(steps: Sequence[Migration]) -> list[list[Migration]]:
    """Each release before the last: every component's steps up to version k."""
    last = max(step.version for step in steps)
    return [[step for step in steps if step.version <= k] for k in range(1, last)]


UPGRADED = ["platform", "review", "restock", "api"]


@pytest.mark.parametrize("name", UPGRADED)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_database_upgraded_from_an_older_version_matches_its_models(
    backend: str, name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    component = DATABASES[name]
    steps = [*PLATFORM, *component.migrations()]
    for number, older in enumerate(older_versions(steps)):
        async with empty_database(backend, tmp_path / str(number), request) as database:
            await migrate_only(database, older)
            upgraded = await database.migrate(component.migrations())
            assert len(upgraded) == len(steps) - len(older)
            assert drift(database, component.metadata()) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_model_changed_without_a_migration_is_drift(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    component = DATABASES["shipping"]
    async with empty_database(backend, tmp_path, request) as database:
        await database.migrate(component.migrations())
        metadata = component.metadata()
        shipments = metadata.tables["shipments"]
        shipments.append_column(sa.Column("carrier", sa.String(50), nullable=True))
        outbox = metadata.tables["agentbus_outbox"]
        unpublished = next(i for i in outbox.indexes if i.name == "agentbus_outbox_unpublished")
        where = outbox.c.unroutable_since.is_(None)
        unpublished.dialect_options["postgresql"]["where"] = where
        unpublished.dialect_options["sqlite"]["where"] = where
        found = drift(database, metadata)
        assert [(d[0], d[3].name) for d in found if d[0] == "add_column"] == [
            ("add_column", "carrier")
        ]
        assert [d[:2] for d in found if d[0] == "where"] == [
            ("where", "agentbus_outbox_unpublished")
        ]
        assert len(found) == 2


def test_every_database_that_migrates_is_checked() -> None:
    declaring = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for folder in ("agentbus", "agents", "consumers", "tools", "evals")
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"^MIGRATIONS\b.*=", path.read_text(), re.MULTILINE)
    }
    checked = {module for component in DATABASES.values() for module in component.modules}
    assert declaring == checked
