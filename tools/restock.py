"""Read-only tools of the restock agent, over its own projection.

Each takes the time of the trigger: an agent sees only the past, which keeps
replays of recordings honest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agentbus.agent import tables as agent_tables
from agents.restock.projection import demand, products, purchase_orders


@dataclass(frozen=True)
class Demand:
    days: int
    total: int
    daily_mean: float
    daily_std: float
    days_with_sales: int
    recent_event_ids: list[str]
    last_week: int
    previous_weeks_mean: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_WINDOW = 7


def demand_history(connection: sa.Connection, sku: str, now: datetime, days: int = 28) -> Demand:
    """Units asked for per day over the last `days` days before `now`."""
    since = now - timedelta(days=days)
    rows = connection.execute(
        sa.select(demand.c.event_id, demand.c.quantity, demand.c.at)
        .where(demand.c.sku == sku, demand.c.at >= since, demand.c.at <= now)
        .order_by(demand.c.at.desc())
    ).all()
    per_day = [0] * days
    for row in rows:
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=now.tzinfo)
        age = min(days - 1, max(0, int((now - at).total_seconds() // 86400)))
        per_day[age] += row.quantity
    first = connection.execute(sa.select(sa.func.min(demand.c.at)).where(demand.c.sku == sku))
    earliest = first.scalar()
    observed = days
    if earliest is not None:
        earliest = earliest if earliest.tzinfo else earliest.replace(tzinfo=now.tzinfo)
        # At least a week: a day or two of history would make one big order a trend.
        seen = math.ceil((now - earliest).total_seconds() / 86400)
        observed = max(MIN_WINDOW, min(days, seen))
    window = per_day[:observed]
    mean = sum(window) / observed
    variance = sum((x - mean) ** 2 for x in window) / observed
    weeks = [sum(window[i : i + 7]) for i in range(7, observed, 7)]
    return Demand(
        days=observed,
        total=sum(window),
        daily_mean=round(mean, 3),
        daily_std=round(math.sqrt(variance), 3),
        days_with_sales=sum(1 for x in window if x),
        recent_event_ids=[row.event_id for row in rows[:10]],
        last_week=sum(window[:7]),
        previous_weeks_mean=round(sum(weeks) / len(weeks), 2) if weeks else 0.0,
    )


def product(connection: sa.Connection, sku: str) -> dict[str, Any] | None:
    row = connection.execute(sa.select(products).where(products.c.sku == sku)).first()
    return None if row is None else dict(row._mapping)


def open_purchase_orders(
    connection: sa.Connection, sku: str, now: datetime
) -> list[dict[str, Any]]:
    rows = connection.execute(
        sa.select(purchase_orders).where(
            purchase_orders.c.sku == sku,
            purchase_orders.c.received_at.is_(None),
            purchase_orders.c.created_at <= now,
        )
    )
    return [
        {"purchase_order_id": r.purchase_order_id, "quantity": r.quantity, "event_id": r.event_id}
        for r in rows
    ]


def past_decisions(connection: sa.Connection, sku: str, limit: int = 10) -> list[dict[str, Any]]:
    """What reviewers did with earlier suggestions for this SKU, newest first."""
    table = agent_tables.suggestions
    rows = connection.execute(
        sa.select(table)
        .where(table.c.subject == sku, table.c.status != "pending")
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


def known_event_ids(connection: sa.Connection, consumer: str, ids: list[str]) -> set[str]:
    """Which of `ids` name events this agent has consumed or published."""
    from agentbus.store import tables as store_tables

    if not ids:
        return set()
    inbox = store_tables.inbox
    seen = connection.execute(
        sa.select(inbox.c.event_id).where(inbox.c.consumer == consumer, inbox.c.event_id.in_(ids))
    )
    found = {row.event_id for row in seen}
    mine = connection.execute(
        sa.select(agent_tables.suggestions.c.event_id).where(
            agent_tables.suggestions.c.event_id.in_(ids)
        )
    )
    return found | {row.event_id for row in mine}
