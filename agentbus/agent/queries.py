"""What every agent may ask of the records the runtime keeps for it (read-only)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from agentbus.agent import tables
from agentbus.store import tables as store_tables

# Built once: they run on every trigger.
_DECIDED = (
    sa.select(tables.suggestions)
    .where(
        tables.suggestions.c.subject == sa.bindparam("subject"),
        tables.suggestions.c.status != "pending",
    )
    .order_by(tables.suggestions.c.created_at.desc())
    .limit(sa.bindparam("limit"))
)
_SEEN = sa.select(store_tables.inbox.c.event_id).where(
    store_tables.inbox.c.consumer == sa.bindparam("agent"),
    store_tables.inbox.c.event_id.in_(sa.bindparam("ids", expanding=True)),
)
_MINE = sa.select(tables.suggestions.c.event_id).where(
    tables.suggestions.c.event_id.in_(sa.bindparam("ids", expanding=True))
)


def past_decisions(
    connection: sa.Connection, subject: str, limit: int = 10
) -> list[dict[str, Any]]:
    """What reviewers did with this agent's earlier suggestions on `subject`, newest first."""
    rows = connection.execute(_DECIDED, {"subject": subject, "limit": limit})
    decided = []
    for row in rows:
        decision = row.decision or {}
        decided.append(
            {
                "suggested_quantity": row.data.get("quantity"),
                "status": row.status,
                "approved_quantity": decision.get("quantity"),
                "reason": decision.get("reason") or decision.get("note") or "",
                "event_id": row.event_id,
            }
        )
    return decided


def known_event_ids(connection: sa.Connection, agent: str, ids: list[str]) -> set[str]:
    """Which of `ids` name events this agent has consumed or published: the only
    evidence a suggestion may cite."""
    if not ids:
        return set()
    seen = connection.execute(_SEEN, {"agent": agent, "ids": ids})
    found = {row.event_id for row in seen}
    mine = connection.execute(_MINE, {"ids": ids})
    return found | {row.event_id for row in mine}
