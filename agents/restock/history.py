"""What the past says about a low-stock signal: analog episodes and observed lead times.

Memory gives the moments this SKU ran low before; the projection gives what
demand did around each of them. An analog is a past low that looked like
today's: one at the same time of year (a season), the same price cut (a
promotion shows as one), or the same run-up (the last days' demand against the
month before); what demand did after it is the best guess of what it will do
now. This is how a promotion or
a season seen once is recognised the second time, which a formula over the
last weeks cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tools import restock as tools

REVIEW_DAYS = 7
BASE_DAYS = 28
RUN_UP_DAYS = 3
ANALOGS_KEPT = 60  # a year of lows of a busy SKU


def recall(
    connection: sa.Connection,
    sku: str,
    now: datetime,
    lead_time_days: int,
    episodes: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    horizon = timedelta(days=max(lead_time_days, 1) + REVIEW_DAYS)
    analogs: list[dict[str, Any]] = []
    for episode in episodes:
        at = datetime.fromisoformat(str(episode["at"]))
        if at + horizon > now:
            continue  # its outcome is not known yet
        run_up, base = _run_up(connection, sku, at)
        if base <= 0:
            continue
        after = tools.demand_between(connection, sku, at, at + horizon)
        analogs.append(
            {
                "event_id": str(episode["event_id"]),
                "at": at.isoformat(),
                "days_ago": (now - at).days,
                "run_up": round(run_up, 3),
                "price_ratio": tools.price_ratio(connection, sku, at),
                "after": round(after / horizon.days / base, 3),
            }
        )
    analogs.sort(key=lambda analog: str(analog["at"]), reverse=True)
    run_up, base = _run_up(connection, sku, now)
    return {
        "run_up": round(run_up, 3),
        "price_ratio": tools.price_ratio(connection, sku, now),
        "base_daily": round(base, 3),
        "analogs": analogs[:ANALOGS_KEPT],
        "observed_lead_days": tools.observed_lead_times(connection, sku, now),
    }


def _run_up(connection: sa.Connection, sku: str, at: datetime) -> tuple[float, float]:
    """(last days' daily demand / the month's, the month's daily demand) before `at`."""
    base = tools.demand_between(connection, sku, at - timedelta(days=BASE_DAYS), at) / BASE_DAYS
    recent = (
        tools.demand_between(connection, sku, at - timedelta(days=RUN_UP_DAYS), at) / RUN_UP_DAYS
    )
    return (recent / base if base > 0 else 0.0), base
