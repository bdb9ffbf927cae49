"""PostgreSQL statements over arrays, for what every batch runs.

A batch claims its ids, stages its events and (in a service like inventory)
reads, locks and updates one row per key. Written through SQLAlchemy with a bind
parameter per row, each batch size is a new statement: rendered in Python,
parsed and planned by the server, never prepared. Here each is one fixed text
that takes its rows as arrays (`unnest`, `= ANY`): psycopg prepares it after a
few runs, and the work a batch leaves to the interpreter (which the event loop
needs) is a list per column. Measured on the inventory service: see
benchmarks/README.md (consumer_throughput).

Tables are named in the transaction's schema (services share a database, each
in a schema of its own), quoted by psycopg.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql


def driver(connection: sa.Connection) -> psycopg.Connection[Any] | None:
    """psycopg's own connection behind `connection`; None on other databases."""
    if connection.dialect.name != "postgresql":
        return None
    found = connection.connection.driver_connection
    return found if isinstance(found, psycopg.Connection) else None


def schema_of(connection: sa.Connection) -> str | None:
    translate = connection.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(None)
    return schema if isinstance(schema, str) else None


@functools.cache
def statement(template: str, schema: str | None, *tables: str) -> sql.Composed:
    """`template` with `{}` for each table, named in `schema`; built once per schema."""
    names = [sql.Identifier(schema, table) if schema else sql.Identifier(table) for table in tables]
    return sql.SQL(template).format(*names)


def claim(
    pg: psycopg.Connection[Any], schema: str | None, consumer: str, ids: Sequence[str], at: datetime
) -> set[str]:
    query = statement(_CLAIM, schema, "agentbus_inbox")
    return {row[0] for row in pg.execute(query, (consumer, at, list(ids)))}


def stage(
    pg: psycopg.Connection[Any],
    schema: str | None,
    rows: Sequence[tuple[str, str, str | None, bytes, str | None]],
    at: datetime,
) -> None:
    """Outbox rows (event_id, type, subject, body, causation_id), in their order."""
    columns = list(zip(*rows, strict=True))
    pg.execute(statement(_STAGE, schema, "agentbus_outbox"), (at, *map(list, columns)))


_CLAIM = (
    "INSERT INTO {} (consumer, event_id, applied_at)"
    " SELECT %s, id, %s FROM unnest(%s::text[]) AS id"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)
# Rows keep their order in the outbox's sequence: the relay publishes by it.
_STAGE = (
    "INSERT INTO {} (event_id, type, subject, body, created_at, causation_id)"
    " SELECT e.event_id, e.type, e.subject, e.body, %s, e.causation_id"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
    " WITH ORDINALITY AS e(event_id, type, subject, body, causation_id, n)"
    " ORDER BY e.n ON CONFLICT (event_id) DO NOTHING"
)
