"""What every agent may ask of the records the runtime keeps for it (read-only)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from agentbus.agent import tables
from agentbus.store import tables as store_tables


def past_decisions(
    connection: sa.Connection, subject: str, limit: int = 10
) -> list[dict[str, Any]]:
    """What reviewers did with this agent's earlier suggestions on `subject`, newest first."""
    table = tables.suggestions
    rows = connection.execute(
        sa.select(table)
        .where(table.c.subject == subject, table.c.status != "pending")
        .order_by(table.c.created_at.desc())
        .limit(limit)
    )
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
    inbox = store_tables.inbox
    seen = connection.execute(
        sa.select(inbox.c.event_id).where(inbox.c.consumer == agent, inbox.c.event_id.in_(ids))
    )
    found = {row.event_id for row in seen}
    mine = connection.execute(
        sa.select(tables.suggestions.c.event_id).where(tables.suggestions.c.event_id.in_(ids))
    )
    return found | {row.event_id for row in mine}
