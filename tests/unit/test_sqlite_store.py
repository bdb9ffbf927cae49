"""SQLite specifics of the store: what goes to the driver directly behaves as SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentbus.envelope import EventCodec
from agentbus.settings import Settings
from agentbus.store import open_database
from agentbus.store import sqlite as sqlite_store
from agentbus.store.database import sqlite_path
from tests.contract.catalog import CATALOG


async def test_a_locked_database_fails_the_unit_with_sqlalchemys_error(tmp_path: Path) -> None:
    database = open_database("locked", EventCodec(CATALOG), url=None, data_dir=tmp_path)
    await database.migrate()
    # The worker keeps its connection: make it give up on the lock quickly.
    await database.read(lambda c: c.exec_driver_sql("PRAGMA busy_timeout=50"))
    other = sqlite3.connect(sqlite_path("locked", tmp_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            await database.run(lambda tx: tx.claim("c", ["e1"]))
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The lock is gone: the same unit now commits, on the same worker.
    assert await database.run(lambda tx: tx.claim("c", ["e1"])) == {"e1"}
    await database.close()


def _synchronous(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_a_services_file_waits_for_the_disk_and_a_scratch_file_does_not(tmp_path: Path) -> None:
    # NORMAL (1) syncs the write-ahead log at its checkpoints; OFF (0) never syncs.
    assert _synchronous(sqlite_store.engine(tmp_path / "kept.db")) == 1
    assert _synchronous(sqlite_store.engine(tmp_path / "scratch.db", scratch=True)) == 0


def test_an_offline_replay_writes_scratch_files_and_a_service_does_not(tmp_path: Path) -> None:
    from evals.replay import replay_settings

    assert Settings.from_env({}).sqlite_scratch is False
    assert replay_settings(tmp_path).sqlite_scratch is True
