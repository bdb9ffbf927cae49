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

from agentbus.agent import known_event_ids, past_decisions
from tools.projections.restock import demand, products, purchase_orders

# The runtime's records, as this agent's tools.
__all__ = ["known_event_ids", "past_decisions"]


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

# Built once: these run on every trigger, and building a statement costs more than running it.
_SKU: sa.BindParameter[str] = sa.bindparam("sku")
_NOW: sa.BindParameter[datetime] = sa.bindparam("now")
_DEMAND = (
    sa.select(demand.c.event_id, demand.c.quantity, demand.c.at)
    .where(demand.c.sku == _SKU, demand.c.at > sa.bindparam("since"), demand.c.at <= _NOW)
    .order_by(demand.c.at.desc())
)
_FIRST_DEMAND = sa.select(sa.func.min(demand.c.at)).where(demand.c.sku == _SKU)
_PRODUCT = sa.select(products).where(products.c.sku == _SKU)
_OPEN_ORDERS = sa.select(purchase_orders).where(
    purchase_orders.c.sku == _SKU,
    purchase_orders.c.created_at <= _NOW,
    # As of `now`: a replay may already hold the arrival that came later.
    sa.or_(purchase_orders.c.received_at.is_(None), purchase_orders.c.received_at > _NOW),
)
_DEMAND_BETWEEN = sa.select(sa.func.coalesce(sa.func.sum(demand.c.quantity), 0)).where(
    demand.c.sku == _SKU, demand.c.at >= sa.bindparam("start"), demand.c.at < sa.bindparam("end")
)
_LEAD_TIMES = (
    sa.select(purchase_orders.c.created_at, purchase_orders.c.received_at)
    .where(
        purchase_orders.c.sku == _SKU,
        purchase_orders.c.received_at.is_not(None),
        purchase_orders.c.received_at <= _NOW,
    )
    .order_by(purchase_orders.c.received_at.desc())
    .limit(sa.bindparam("limit"))
)
_PRICES = sa.select(demand.c.unit_price, demand.c.at).where(
    demand.c.sku == _SKU,
    demand.c.at >= sa.bindparam("since"),
    demand.c.at <= _NOW,
    demand.c.unit_price.is_not(None),
)


def demand_history(connection: sa.Connection, sku: str, now: datetime, days: int = 28) -> Demand:
    """Units asked for per day over the last `days` days before `now`."""
    since = now - timedelta(days=days)
    rows = connection.execute(_DEMAND, {"sku": sku, "since": since, "now": now}).all()
    per_day = [0] * days
    for row in rows:
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=now.tzinfo)
        age = min(days - 1, max(0, int((now - at).total_seconds() // 86400)))
        per_day[age] += row.quantity
    earliest = connection.execute(_FIRST_DEMAND, {"sku": sku}).scalar()
    observed = days
    if earliest is not None:
        earliest = earliest if earliest.tzinfo else earliest.replace(tzinfo=now.tzinfo)
        # At least a week: a day or two of history would make one big order a trend.
        seen = math.ceil((now - earliest).total_seconds() / 86400)
        observed = max(MIN_WINDOW, min(days, seen))
    window = per_day[:observed]
    mean = sum(window) / observed
    variance = sum((x - mean) ** 2 for x in window) / observed
    # Whole weeks only: a partial one would read as a drop and make a trend of nothing.
    weeks = [sum(window[i : i + 7]) for i in range(7, observed - 6, 7)]
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
    row = connection.execute(_PRODUCT, {"sku": sku}).first()
    return None if row is None else dict(row._mapping)


def open_purchase_orders(
    connection: sa.Connection, sku: str, now: datetime
) -> list[dict[str, Any]]:
    rows = connection.execute(_OPEN_ORDERS, {"sku": sku, "now": now})
    return [
        {"purchase_order_id": r.purchase_order_id, "quantity": r.quantity, "event_id": r.event_id}
        for r in rows
    ]


def demand_between(connection: sa.Connection, sku: str, start: datetime, end: datetime) -> int:
    """Units asked for in [start, end)."""
    total = connection.execute(_DEMAND_BETWEEN, {"sku": sku, "start": start, "end": end}).scalar()
    return int(total or 0)


def observed_lead_times(
    connection: sa.Connection, sku: str, now: datetime, limit: int = 3
) -> list[float]:
    """Days from purchase order to arrival for the latest orders received before `now`."""
    rows = connection.execute(_LEAD_TIMES, {"sku": sku, "now": now, "limit": limit})
    return [round((row.received_at - row.created_at).total_seconds() / 86400, 2) for row in rows]


def price_ratio(connection: sa.Connection, sku: str, at: datetime) -> float:
    """The last day's lowest price over the month's usual (median) price; 1.0 when unknown.

    Well under 1 means a price cut, which is how a promotion shows in the orders.
    """
    rows = connection.execute(
        _PRICES, {"sku": sku, "since": at - timedelta(days=28), "now": at}
    ).all()
    if not rows:
        return 1.0
    prices = sorted(row.unit_price for row in rows)
    usual = prices[len(prices) // 2]
    day_ago = (at - timedelta(days=1)).replace(tzinfo=None)
    recent = [row.unit_price for row in rows if row.at.replace(tzinfo=None) >= day_ago]
    if not recent or usual <= 0:
        return 1.0
    return round(float(min(recent)) / float(usual), 3)
