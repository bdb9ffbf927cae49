"""What memory says about a low-stock signal that the last weeks of demand cannot.

The supplier's real lead time, learned from deliveries: a quantile over enough
of them, not the last one, so that one late delivery (ordinary noise) does not
make every later order larger, while a supplier that has really slowed down
shows within a few orders. Seasons, monthly cycles and promotions are the
forecast's (`tools.forecast`, given memory); past reviewer decisions are the
policy's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tools import restock as tools

LEAD_SAMPLE = 4  # the latest deliveries looked at
LEAD_ENOUGH = 3  # fewer than this say nothing beyond the catalog
LEAD_QUANTILE = 0.75
MEMORY_DAYS = 730  # the forecast's memory: two years, for a yearly cycle seen twice


def lead_time(
    connection: sa.Connection, sku: str, now: datetime, catalog_days: int
) -> dict[str, Any]:
    """The lead time to plan with: the catalog's, or what deliveries showed."""
    observed = tools.observed_lead_times(connection, sku, now, limit=LEAD_SAMPLE)
    found: dict[str, Any] = {"catalog_days": catalog_days, "observed_days": observed}
    if len(observed) < LEAD_ENOUGH:
        return {**found, "days": float(catalog_days), "source": "catalog"}
    ranked = sorted(observed)
    # The lower 75th percentile: of four deliveries one late does not move it, two do.
    days = ranked[int(LEAD_QUANTILE * (len(ranked) - 1))]
    if abs(days - catalog_days) < 0.5:
        return {**found, "days": float(catalog_days), "source": "catalog, as deliveries confirm"}
    return {**found, "days": float(days), "source": f"{len(observed)} deliveries"}
