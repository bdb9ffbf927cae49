"""The agent runtime's tables upgrade in place: a database from before the subject
indexes gets them, and the queries of every trigger use them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentbus.agent import tables
from agentbus.envelope import EventCodec
from agentbus.store import open_database
from events import CATALOG

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_database_of_version_1_gets_the_subject_indexes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("database_url") if backend == "postgresql" else None
    database = open_database(
        f"agent_mig_{uuid.uuid4().hex[:8]}", EventCodec(CATALOG), url=url, data_dir=tmp_path
    )
    schema = database.schema

    def indexes(connection: sa.Connection) -> set[str]:
        inspector = sa.inspect(connection)
        return {
            index["name"] or ""
            for table in ("agent_runs", "agent_suggestions")
            for index in inspector.get_indexes(table, schema=schema)
        }

    try:
        await database.migrate(tables.MIGRATIONS[:1])
        # Version 1 makes its tables as it was released: without the subject indexes.
        before = await database.read(indexes)
        assert not before & {"agent_runs_by_subject", "agent_suggestions_by_subject"}
        upgraded = await database.migrate(tables.MIGRATIONS)
        assert [(m.component, m.version) for m in upgraded] == [("agent-runtime", 2)]
        assert {"agent_runs_by_subject", "agent_suggestions_by_subject"} <= await database.read(
            indexes
        )
        if backend == "sqlite":
            # The coalescing check of every trigger reads the index, not the whole table.
            def plan(connection: sa.Connection) -> str:
                rows = connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT trigger_id FROM agent_runs "
                    "WHERE subject = 'S' AND status = 'started' AND trigger_id != 'x'"
                ).all()
                return " ".join(str(row[-1]) for row in rows)

            assert "agent_runs_by_subject" in await database.read(plan)
    finally:
        if schema is not None:
            await database.read(
                lambda c: c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE')) and c.commit()
            )
        await database.close()


async def test_a_new_database_has_the_indexes_from_its_first_version(tmp_path: Path) -> None:
    database = open_database("agent_new", EventCodec(CATALOG), url=None, data_dir=tmp_path)
    try:
        await database.migrate(tables.MIGRATIONS)
        names = await database.read(
            lambda c: {i["name"] for i in sa.inspect(c).get_indexes("agent_suggestions")}
        )
        assert "agent_suggestions_by_subject" in names
        assert await database.migrate(tables.MIGRATIONS) == []
    finally:
        await database.close()
