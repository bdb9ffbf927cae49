"""A fresh SQLite file is built from the statements kept from the first one migrated
with the same migrations: the same file as migrating it step by step would give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentbus.store import sqlite as sqlite_store
from agentbus.store.migrations import PLATFORM, Migration, create_tables, run_migrations
from agentbus.store.sqlite import SqliteAdapter

metadata = sa.MetaData()
shelves = sa.Table(
    "shelves",
    metadata,
    sa.Column("shelf", sa.String(50), primary_key=True),
    sa.Column("capacity", sa.Integer(), nullable=False),
    sa.Index("ix_shelves_capacity", "capacity"),
)
# A child whose name sorts before its parent's: the dump lists its rows first.
owners = sa.Table("z_owners", metadata, sa.Column("owner", sa.String(50), primary_key=True))
bins = sa.Table(
    "a_bins",
    metadata,
    sa.Column("bin", sa.String(50), primary_key=True),
    sa.Column("owner", sa.String(50), sa.ForeignKey("z_owners.owner"), nullable=False),
)
calls: list[str] = []


def _seed(op: Any) -> None:
    calls.append("seed")
    op.bulk_insert(shelves, [{"shelf": "A", "capacity": 10}, {"shelf": "B", "capacity": 4}])
    op.bulk_insert(owners, [{"owner": "north"}])
    op.bulk_insert(bins, [{"bin": "N1", "owner": "north"}])


def _steps() -> list[Migration]:
    return [
        *PLATFORM,
        Migration("shop", 1, "shelves, owners and bins", create_tables(shelves, owners, bins)),
        Migration("shop", 2, "the first shelves", _seed),
    ]


def _file(path: Path) -> dict[str, Any]:
    """What a file holds: its schema's statements, its rows, and what it says ran."""
    engine = sqlite_store.engine(path)
    with engine.connect() as connection:
        schema = sorted(
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
            )
        )
        rows = [
            *connection.exec_driver_sql("SELECT * FROM shelves ORDER BY shelf"),
            *connection.exec_driver_sql("SELECT * FROM a_bins"),
        ]
        ran = connection.exec_driver_sql(
            "SELECT component, version, description FROM agentbus_migrations"
            " ORDER BY component, version"
        ).all()
    engine.dispose()
    return {"schema": schema, "rows": rows, "ran": ran}


_ADAPTER = SqliteAdapter()


def _migrate(path: Path, steps: list[Migration], how: Any = _ADAPTER.migrate) -> list[Migration]:
    engine = sqlite_store.engine(path)
    with engine.begin() as connection:
        ran: list[Migration] = how(connection, steps)
    engine.dispose()
    return ran


def test_a_fresh_file_from_the_kept_statements_is_the_file_the_steps_make(
    tmp_path: Path,
) -> None:
    steps = _steps()  # a set of its own: nothing kept for it yet
    calls.clear()
    by_steps = _migrate(tmp_path / "plain.db", steps, run_migrations)
    first = _migrate(tmp_path / "first.db", steps)
    assert calls == ["seed", "seed"]  # both ran every step
    second = _migrate(tmp_path / "second.db", steps)
    assert calls == ["seed", "seed"]  # the kept statements built it
    assert by_steps == first == second == steps
    expected = _file(tmp_path / "plain.db")
    assert len(expected["schema"]) >= 6
    assert len(expected["ran"]) == len(steps)
    assert _file(tmp_path / "second.db") == expected


def test_a_file_that_holds_tables_is_migrated_step_by_step(tmp_path: Path) -> None:
    steps = _steps()
    _migrate(tmp_path / "kept-from.db", steps)  # statements now kept for `steps`
    _migrate(tmp_path / "older.db", steps[:-1])
    calls.clear()
    ran = _migrate(tmp_path / "older.db", steps)
    assert ran == steps[-1:]
    assert calls == ["seed"]
    assert _file(tmp_path / "older.db")["rows"] == [("A", 10), ("B", 4), ("N1", "north")]
    assert _migrate(tmp_path / "older.db", steps) == []  # nothing left to run
