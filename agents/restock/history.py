"""What memory says about a low-stock signal that the last weeks of demand cannot.

The supplier's real lead time, learned from deliveries: it departs from the
catalog's only when each of the last three deliveries departed from it the
same way, and then by the least of their departures. One late delivery, or two
(ordinary noise), changes nothing; a supplier that has really slowed down
shows within three orders. Seasons, monthly cycles and promotions are the
forecast's (`tools.forecast`, given memory); past reviewer decisions are the
policy's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tools import restock as tools

LEAD_SAMPLE = 3  # the latest deliveries that must agree
MEMORY_DAYS = 730  # the forecast's memory: two years, for a yearly cycle seen twice


def lead_time(
    connection: sa.Connection, sku: str, now: datetime, catalog_days: int
) -> dict[str, Any]:
    """The lead time to plan with: the catalog's, or what deliveries showed."""
    observed = tools.observed_lead_times(connection, sku, now, limit=LEAD_SAMPLE)
    found: dict[str, Any] = {"catalog_days": catalog_days, "observed_days": observed}
    if len(observed) < LEAD_SAMPLE:
        return {**found, "days": float(catalog_days), "source": "catalog"}
    if all(days >= catalog_days + 0.5 for days in observed):
        days = min(observed)
    elif all(days <= catalog_days - 0.5 for days in observed):
        days = max(observed)
    else:
        return {**found, "days": float(catalog_days), "source": "catalog, as deliveries confirm"}
    return {**found, "days": float(days), "source": f"the last {len(observed)} deliveries"}
