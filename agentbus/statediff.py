"""A service's state as rows, and the differences between two copies of it.

The state is every table of the service's own (the platform's inbox, outbox and
bookkeeping are not state), each row keyed by its primary key. Columns of times are
left out: they say when this copy applied an event, which differs between a live
service and a rebuild of it and is not state the events determine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

PLATFORM_PREFIX = "agentbus_"

Rows = dict[tuple[Any, ...], dict[str, Any]]
State = dict[str, Rows]


def read_state_rows(connection: sa.Connection, schema: str | None = None) -> State:
    """{table: {primary key: {column: value}}} of the service's own tables."""
    metadata = sa.MetaData()
    names = sa.inspect(connection).get_table_names(schema=schema)
    state: State = {}
    for name in sorted(names):
        if name.startswith(PLATFORM_PREFIX):
            continue
        table = sa.Table(name, metadata, autoload_with=connection, schema=schema)
        columns = [c for c in table.columns if not _is_time(c.type)]
        key = [c.name for c in table.primary_key.columns] or [c.name for c in columns]
        rows: Rows = {}
        for row in connection.execute(sa.select(*columns)).mappings():
            values = dict(row)
            rows[tuple(values[k] for k in key)] = values
        state[name] = rows
    return state


def _is_time(kind: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(kind, sa.DateTime | sa.Date | sa.Time)


def differences(rebuilt: State, live: State) -> list[str]:
    """One line per difference, in table and key order; empty when equal."""
    return list(_differences(rebuilt, live))


def _differences(rebuilt: State, live: State) -> Iterator[str]:
    for table in sorted(rebuilt.keys() | live.keys()):
        if table not in live:
            yield f"{table}: a table only the rebuilt state has"
            continue
        if table not in rebuilt:
            yield f"{table}: a table only the live state has"
            continue
        ours, theirs = rebuilt[table], live[table]
        for key in sorted(ours.keys() | theirs.keys(), key=_sortable):
            where = f"{table}[{', '.join(str(part) for part in key)}]"
            if key not in theirs:
                yield f"{where}: only in the rebuilt state {_shown(ours[key])}"
            elif key not in ours:
                yield f"{where}: only in the live state {_shown(theirs[key])}"
            else:
                for column in sorted(ours[key].keys() | theirs[key].keys()):
                    mine, other = ours[key].get(column), theirs[key].get(column)
                    if mine != other:
                        yield f"{where}.{column}: rebuilt {_short(mine)}, live {_short(other)}"


def _sortable(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


def _shown(row: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={_short(v)}" for k, v in row.items()) + "}"


def _short(value: Any, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
