"""The demand forecast tool: units a SKU will be asked for per day, as of a moment.

It reads the SKU's daily demand before `now` from the restock projection (the
past only, like every tool) and forecasts with `tools.forecasting`: level,
trend and weekly seasonality from the last eight weeks; intermittent demand
with ADIDA; a product seen for a few days from those days; one never
sold from its catalog entry.

Given memory (`memory_days` beyond the eight weeks), it also looks for the
patterns of `tools.demand_patterns` (promotions, days of the month, the same
time last year), each used only where the memory shows it beyond chance. The
model then fits the ordinary level (the past divided by the patterns'
multipliers) and the forecast carries the patterns' multipliers ahead. Where none
is found, memory still shows a fall too slow to tell from noise in eight weeks if
it holds steadily over sixteen (`forecasting.fall`); otherwise the forecast is
exactly the one made without memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from tools import demand_patterns, forecasting
from tools.projections.restock import demand, products

WINDOW_DAYS = 56  # what the model sees of the recent past: eight weeks

_ROWS = sa.select(demand.c.quantity, demand.c.at, demand.c.unit_price).where(
    demand.c.sku == sa.bindparam("sku"),
    demand.c.at > sa.bindparam("since"),
    demand.c.at <= sa.bindparam("now"),
)
_FIRST = sa.select(sa.func.min(demand.c.at)).where(demand.c.sku == sa.bindparam("sku"))
_CATALOG = sa.select(products.c.reorder_point, products.c.lead_time_days).where(
    products.c.sku == sa.bindparam("sku")
)


@dataclass(frozen=True)
class Forecast:
    method: str
    engine: str
    history_days: int
    daily: tuple[float, ...]  # expected units per day ahead
    daily_sd: tuple[float, ...]
    adjustments: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def total(forecast: dict[str, Any], days: float) -> float:
    """Expected units over the first `days` days (a fraction of a day counts in part)."""
    return _partial(forecast["daily"], days, square=False)


def spread(forecast: dict[str, Any], days: float) -> float:
    """Standard deviation of the units asked over the first `days` days."""
    return math.sqrt(_partial(forecast["daily_sd"], days, square=True))


def summary(forecast: dict[str, Any], lead_days: float, review_days: int) -> dict[str, Any]:
    """The forecast as a model reads it: totals with their spread over the stretches an
    order answers for, not day-by-day arrays (a small model loses the thread in those)."""

    def stretch(days: float) -> dict[str, float]:
        return {
            "days": round(days, 1),
            "units": round(total(forecast, days), 1),
            "sd": round(spread(forecast, days), 1),
        }

    return {
        "method": forecast["method"],
        "history_days": forecast["history_days"],
        "over_lead_time": stretch(lead_days),
        "over_lead_time_and_review": stretch(lead_days + review_days),
        "adjustments": list(forecast.get("adjustments", ())),
    }


def _partial(values: Sequence[float], days: float, *, square: bool) -> float:
    whole = min(int(days), len(values))
    power = 2 if square else 1
    out = sum(float(v) ** power for v in values[:whole])
    if whole < len(values) and days > whole:
        out += (days - whole) * float(values[whole]) ** power
    return out


def demand_forecast(
    connection: sa.Connection, sku: str, now: datetime, horizon_days: int, memory_days: int = 0
) -> Forecast:
    """The forecast over `horizon_days` after `now`, learning from `memory_days` more."""
    days = WINDOW_DAYS + max(0, memory_days)
    units, prices, latest_price = _daily(connection, sku, now, days)
    first = connection.execute(_FIRST, {"sku": sku}).scalar()
    if first is not None:
        first = first if first.tzinfo else first.replace(tzinfo=now.tzinfo)
        seen = max(1, math.ceil((now - first).total_seconds() / 86400))
        if seen < len(units):
            # A young product: the days before its first sale are not days without sales.
            units, prices = units[-seen:], prices[-seen:]
    engine = forecasting.engine()
    if first is None or first > now or not units:
        return _prior(connection, sku, horizon_days, engine)
    if memory_days > 0:
        remembered = _remembering(units, prices, latest_price, now, horizon_days, engine)
        if remembered is not None:
            return remembered
        if len(units) > WINDOW_DAYS:
            falling = forecasting.fall(units, horizon_days)
            if falling is not None:
                seen = min(len(units), forecasting.FALL_WEEKS * forecasting.WEEK)
                return Forecast(falling.method, engine, seen, falling.mean, falling.sd)
    recent = units[-WINDOW_DAYS:]
    fitted = forecasting.fit(recent, horizon_days)
    return Forecast(fitted.method, engine, len(recent), fitted.mean, fitted.sd)


def _remembering(
    units: list[int],
    prices: list[float | None],
    latest_price: float | None,
    now: datetime,
    horizon: int,
    engine: str,
) -> Forecast | None:
    """The forecast with the patterns memory shows; None when it shows none."""
    y = np.asarray(units, dtype=float)
    n = len(y)
    dates = [_midday(now, -(n - i)) for i in range(n)]
    ahead = [_midday(now, h) for h in range(horizon)]
    found: list[demand_patterns.Pattern] = []
    promoted = demand_patterns.promotions(y, [*prices[:-1], latest_price], horizon)
    flags = [False] * n
    if promoted is not None:
        found.append(promoted[0])
        flags = promoted[1]
    past = np.prod([p.past for p in found], axis=0) if found else np.ones(n)
    ordinary = y / past
    yearly = demand_patterns.last_year(ordinary, horizon)
    if yearly is not None:
        found.append(yearly)
    else:
        monthly = demand_patterns.day_of_month(ordinary, dates, ahead, flags)
        if monthly is not None:
            found.append(monthly)
    if not found:
        return None
    past = np.prod([p.past for p in found], axis=0)
    future = np.prod([p.future for p in found], axis=0)
    base = forecasting.fit(list(y[-WINDOW_DAYS:] / past[-WINDOW_DAYS:]), horizon)
    spread_ = math.sqrt(sum(p.spread**2 for p in found))
    mean = [float(m * f) for m, f in zip(base.mean, future, strict=True)]
    sd = [
        float(math.sqrt((s * f) ** 2 + (spread_ * m * abs(f - 1)) ** 2))
        for s, m, f in zip(base.sd, base.mean, future, strict=True)
    ]
    return Forecast(
        f"{base.method} on the ordinary level, with {', '.join(p.name for p in found)}",
        engine,
        n,
        tuple(mean),
        tuple(sd),
        tuple(p.note for p in found),
    )


def _midday(now: datetime, offset: int) -> date:
    """The calendar date of the middle of the 24 hours starting `offset` days after `now`."""
    return (now + timedelta(days=offset + 0.5)).date()


def _daily(
    connection: sa.Connection, sku: str, now: datetime, days: int
) -> tuple[list[int], list[float | None], float | None]:
    """Units per day and the day's lowest price, oldest first (day -1 ends at `now`), and
    the price of the latest order."""
    since = now - timedelta(days=days)
    units = [0] * days
    prices: list[float | None] = [None] * days
    latest: tuple[datetime, float] | None = None
    for quantity, at, price in connection.execute(_ROWS, {"sku": sku, "since": since, "now": now}):
        at = at if at.tzinfo else at.replace(tzinfo=now.tzinfo)
        age = min(days - 1, max(0, int((now - at).total_seconds() // 86400)))
        day = days - 1 - age
        units[day] += int(quantity)
        if price is not None:
            current = prices[day]
            prices[day] = float(price) if current is None else min(current, float(price))
            if latest is None or at >= latest[0]:
                latest = (at, float(price))
    return units, prices, None if latest is None else latest[1]


def _prior(connection: sa.Connection, sku: str, horizon: int, engine: str) -> Forecast:
    """Never sold: the catalog's reorder point, read as the demand over the lead time."""
    row = connection.execute(_CATALOG, {"sku": sku}).first()
    rate = 0.0
    if row is not None:
        rate = float(row.reorder_point) / (max(int(row.lead_time_days), 1) + 1)
    return Forecast(
        "no sales yet: the reorder point spread over the lead time",
        engine,
        0,
        (rate,) * horizon,
        (max(rate, 1.0),) * horizon,
    )
