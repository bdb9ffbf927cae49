"""What differs between declared tables and a migrated database, as Alembic sees it.

`schema_drift` runs Alembic's autogenerate comparison (tables, columns, types,
nullability, server defaults, indexes, unique constraints) and adds what autogenerate
leaves out: the predicate of a partial index, which it compares by name and columns
only. An empty answer means the migrations make the schema the models describe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext


def declared(*table_groups: Iterable[sa.Table]) -> sa.MetaData:
    """One MetaData holding copies of the given tables (a database holds several components')."""
    metadata = sa.MetaData()
    for group in table_groups:
        for table in group:
            if table.name not in metadata.tables:
                table.to_metadata(metadata)
    return metadata


def schema_drift(
    connection: sa.Connection, metadata: sa.MetaData, schema: str | None = None
) -> list[Any]:
    """Differences between `metadata` and the database: Alembic's diff tuples, and
    ("where", index, in the database, in the model) for partial indexes.

    `schema`: the PostgreSQL schema the tables are in (a service's own). Runs in a
    transaction of its own on `connection`, rolled back.
    """
    with connection.begin() as transaction:
        if schema is not None:
            connection.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        found: list[Any] = list(compare_metadata(context, metadata))
        found += _partial_index_drift(connection, metadata)
        transaction.rollback()
    return found


def _partial_index_drift(connection: sa.Connection, metadata: sa.MetaData) -> list[Any]:
    dialect = connection.dialect
    key = f"{dialect.name}_where"
    inspector = sa.inspect(connection)
    found: list[Any] = []
    for table in metadata.tables.values():
        if not inspector.has_table(table.name):
            continue  # a missing table is Alembic's to report
        reflected = {
            index["name"]: index.get("dialect_options", {}).get(key)
            for index in inspector.get_indexes(table.name)
        }
        for index in table.indexes:
            if index.name not in reflected:
                continue  # likewise a missing index
            wanted = index.dialect_options[dialect.name].get("where")
            have = reflected[index.name]
            if _predicate(wanted, dialect) != _predicate(have, dialect):
                found.append(("where", index.name, have, wanted))
    return found


def _predicate(where: Any, dialect: sa.Dialect) -> str | None:
    if where is None:
        return None
    if isinstance(where, sa.ClauseElement):
        text = str(
            where.compile(
                dialect=dialect, compile_kwargs={"literal_binds": True, "include_table": False}
            )
        )
    else:
        text = str(where)
    text = re.sub(r"\s+", " ", text).strip().lower()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text
