"""SQLite specifics of the store: what goes to the driver directly behaves as SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentbus.envelope import EventCodec
from agentbus.store import open_database
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
