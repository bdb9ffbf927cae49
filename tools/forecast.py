"""The demand forecast tool: units a SKU will be asked for per day, as of a moment.

It reads the SKU's daily demand before `now` from the restock projection (the
past only, like every tool) and forecasts with `tools.forecasting`: level,
trend and weekly seasonality from the last four weeks; intermittent demand with
Croston's method; a product seen for a few days from those days; one never sold
from its catalog entry.

Given memory (`memory_days` beyond the four weeks), it also looks at what the
same forecast got wrong at the same phase of earlier cycles (the same day of
earlier months, the same date a year ago) and at earlier promotions (the price
cut is the flag), and corrects for them only where the evidence is strong: on
demand without such structure it answers exactly as it does without memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import numpy as np
import sqlalchemy as sa

from agents.restock.projection import demand, products
from tools import forecasting

WINDOW_DAYS = 56  # what the forecaster sees of the recent past: eight weeks
LEVEL_DAYS = 28  # the weeks before a moment that a cycle's phase is measured against
PROMOTION_CUT = 0.95  # a day's price this far under the usual one is a promotion day
CYCLE_Z = 3.0  # how far from chance earlier cycles' misses must be to correct for them
CYCLE_MIN_SHIFT = 0.2  # ... and by how much, at least (a fifth of the demand)
CYCLE_GAIN = 0.25  # ... and closer overall by a quarter of the forecast's own misses
SMOOTH = 2  # days either side when comparing a day of an earlier cycle
MONTHS_BACK = 6
YEARS_BACK = 2

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
    units, prices = _daily(connection, sku, now, days)
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
    recent = units[-WINDOW_DAYS:]
    if memory_days <= 0:
        fitted = forecasting.fit(recent, horizon_days)
        return Forecast(fitted.method, engine, len(recent), fitted.mean, fitted.sd)
    return _remembering(units, prices, now, horizon_days, engine)


def _remembering(
    units: list[int], prices: list[float | None], now: datetime, horizon: int, engine: str
) -> Forecast:
    promo = _promotion_days(prices)
    recent = units[-WINDOW_DAYS:]
    fitted = forecasting.fit(recent, horizon)
    mean, sd = list(fitted.mean), list(fitted.sd)
    notes: list[str] = []
    ongoing = _trailing(promo)
    promo_in_window = any(promo[-WINDOW_DAYS:])
    if promo_in_window:
        ordinary = [u for u, p in zip(units, promo, strict=True) if not p][-WINDOW_DAYS:]
        lifted = _promotion(units, prices, promo, ongoing, horizon, ordinary) if ongoing else None
        if lifted is not None:
            return Forecast(
                f"{fitted.method} on ordinary days, lifted as earlier promotions were",
                engine,
                len(units),
                *lifted,
            )
        if not ongoing and len(ordinary) >= forecasting.MIN_MODEL_DAYS:
            base = forecasting.fit(ordinary, horizon)
            mean, sd = list(base.mean), list(base.sd)
            notes.append("promotion days left out: the promotion is over")
    elif not forecasting.trending(recent):
        # A trend is the model's to follow; a cycle is a pattern in a level that holds.
        for name, offsets in (("yearly", _years(now, len(units))), ("monthly", _months(now))):
            corrected = _cycle(units, promo, offsets, horizon, name)
            if corrected is not None:
                mean, sd, note = corrected
                notes.append(note)
                break
    return Forecast(fitted.method, engine, len(units), tuple(mean), tuple(sd), tuple(notes))


def _cycle(
    units: list[int], promo: list[bool], offsets: Sequence[int], horizon: int, name: str
) -> tuple[list[float], list[float], str] | None:
    """The same phase of earlier cycles, used only where it would have beaten the forecast.

    At each earlier cycle's same moment: the next `horizon` days' demand over the
    `LEVEL_DAYS` before it (a ratio, so a shop that grew between cycles still
    matches). The cycle forecast is today's level times that ratio. It replaces the
    model's forecast only if, at those earlier moments, it was right where the
    model was wrong: closer in most cycles, and closer overall by more than chance.
    """
    n = len(units)
    level = sum(units[-LEVEL_DAYS:]) / LEVEL_DAYS
    if level <= 0:
        return None
    recent = np.asarray(units[-LEVEL_DAYS:], dtype=float)
    dispersion = max(1.0, float(recent.var()) / level)
    seen: list[tuple[int, float, float, float]] = []  # start, base, actual, model's forecast
    for offset in offsets:
        start = n - offset  # where this phase began in that cycle
        if start - LEVEL_DAYS < 0 or start + horizon + SMOOTH > n:
            continue
        if any(promo[start - LEVEL_DAYS : start + horizon]):
            continue  # a promotion then says nothing about the cycle
        base = sum(units[start - LEVEL_DAYS : start]) / LEVEL_DAYS
        if base <= 0:
            continue
        then = forecasting.fit(units[max(0, start - WINDOW_DAYS) : start], horizon)
        actual = float(sum(units[start : start + horizon]))
        seen.append((start, base, actual, sum(then.mean)))
    if not seen:
        return None
    ratios = [actual / (horizon * base) for _, base, actual, _ in seen]
    middle = median(ratios)
    if len(seen) == 1:
        # One earlier cycle cannot be checked against another: it must stand far from chance.
        _, base, actual, model = seen[0]
        noise = math.sqrt(dispersion * horizon * base * (1 + horizon / LEVEL_DAYS))
        if abs(math.log(max(middle, 1e-6))) < CYCLE_MIN_SHIFT:
            return None
        if abs(actual - horizon * base) < (CYCLE_Z + 1) * noise:
            return None
        if abs(actual - model) < abs(actual - horizon * base * middle) + CYCLE_Z * noise:
            return None
    elif not _beats(seen, _left_out(ratios), horizon):
        # The cycle did not beat the model; the plain level might have (after a burst the
        # model chases, say): the same test, with a ratio of one.
        if not _beats(seen, [1.0] * len(seen), horizon):
            return None
        sd_level = math.sqrt(dispersion * level)
        note = (
            f"{name} cycle: at this phase of {len(seen)} earlier cycle(s) the last "
            f"{LEVEL_DAYS} days' level foresaw the next {horizon} better than the model"
        )
        return [level] * horizon, [sd_level] * horizon, note
    spread_r = float(np.std(ratios) / np.mean(ratios)) if len(seen) > 1 else CYCLE_MIN_SHIFT
    bases = sum(base for _, base, _, _ in seen) / len(seen)
    mean, sd = [], []
    for h in range(horizon):
        # Days h - SMOOTH .. h + SMOOTH after each earlier moment, for the shape within.
        days = [
            units[start + d] for start, _, _, _ in seen for d in range(h - SMOOTH, h + SMOOTH + 1)
        ]
        factor = (sum(days) / len(days)) / bases
        rate = level * min(max(factor, 0.2), 6.0)
        mean.append(rate)
        sd.append(math.sqrt(dispersion * rate + horizon * (spread_r * rate) ** 2))
    note = (
        f"{name} cycle: at this phase of {len(seen)} earlier cycle(s) the next {horizon} days "
        f"sold x{middle:.2f} of the {LEVEL_DAYS} days before, which the model missed"
    )
    return mean, sd, note


def _beats(
    seen: Sequence[tuple[int, float, float, float]], ratios: Sequence[float], horizon: int
) -> bool:
    """Whether `ratios` x each moment's level foresaw the demand after it better than the
    model did: closer in two cycles out of three, and closer overall by more than chance."""
    model_error, error, wins, noise = 0.0, 0.0, 0, 0.0
    for (_, base, actual, model), ratio in zip(seen, ratios, strict=True):
        mine = abs(actual - horizon * base * ratio)
        model_error += abs(actual - model)
        error += mine
        wins += mine < abs(actual - model)
        noise += horizon * base  # Poisson's, as a cycle's own swings are the signal
    gain = model_error - error
    return (
        wins * 3 >= len(seen) * 2
        and gain >= CYCLE_GAIN * model_error
        and gain >= 2 * math.sqrt(noise)
    )


def _left_out(ratios: Sequence[float]) -> list[float]:
    """Each cycle's forecast from the others alone, so no cycle vouches for itself."""
    return [median(r for i, r in enumerate(ratios) if i != j) for j in range(len(ratios))]


def _promotion(
    units: list[int],
    prices: list[float | None],
    promo: list[bool],
    ongoing: int,
    horizon: int,
    ordinary: list[int],
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[str, ...]] | None:
    """A promotion on now: earlier ones with a like cut say how much it lifts, and how long."""
    runs = _runs(promo)[:-1]  # the last run is today's
    usual = _usual(prices)
    cut_now = _run_cut(prices, len(promo) - ongoing, len(promo), usual)
    lifts, lengths = [], []
    for start, end in runs:
        if abs(_run_cut(prices, start, end, usual) - cut_now) > 0.1:
            continue
        before = [u for u, p in zip(units[:start], promo[:start], strict=True) if not p]
        before = before[-WINDOW_DAYS:]
        if len(before) < forecasting.MIN_MODEL_DAYS or sum(before) == 0:
            continue
        lifts.append((sum(units[start:end]) / (end - start)) / (sum(before) / len(before)))
        lengths.append(end - start)
    if not lifts or len(ordinary) < forecasting.MIN_MODEL_DAYS:
        return None
    lift, length = median(lifts), median(lengths)
    base = forecasting.fit(ordinary, horizon)
    left = max(0.0, length - ongoing)
    mean, sd = [], []
    for h in range(horizon):
        share = min(1.0, max(0.0, left - h))  # the part of day h still on promotion
        factor = 1 + (lift - 1) * share
        mean.append(base.mean[h] * factor)
        sd.append(max(base.sd[h] * factor, math.sqrt(base.mean[h] * factor)))
    note = (
        f"{len(lifts)} earlier promotion(s) at a like cut lifted demand x{lift:.2f} for "
        f"{length:.0f} days; this one is {ongoing} day(s) in"
    )
    return tuple(mean), tuple(sd), (note,)


def _daily(
    connection: sa.Connection, sku: str, now: datetime, days: int
) -> tuple[list[int], list[float | None]]:
    """Units per day and the day's lowest price, oldest first; day -1 ends at `now`."""
    since = now - timedelta(days=days)
    units = [0] * days
    prices: list[float | None] = [None] * days
    for quantity, at, price in connection.execute(_ROWS, {"sku": sku, "since": since, "now": now}):
        at = at if at.tzinfo else at.replace(tzinfo=now.tzinfo)
        age = min(days - 1, max(0, int((now - at).total_seconds() // 86400)))
        day = days - 1 - age
        units[day] += int(quantity)
        if price is not None:
            current = prices[day]
            prices[day] = float(price) if current is None else min(current, float(price))
    return units, prices


def _usual(prices: Sequence[float | None]) -> float:
    known = [p for p in prices if p is not None]
    return median(known) if known else 0.0


def _promotion_days(prices: Sequence[float | None]) -> list[bool]:
    usual = _usual(prices)
    return [p is not None and usual > 0 and p <= usual * PROMOTION_CUT for p in prices]


def _run_cut(prices: Sequence[float | None], start: int, end: int, usual: float) -> float:
    known = [p for p in prices[start:end] if p is not None]
    return median(known) / usual if known and usual > 0 else 1.0


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of True, oldest first."""
    runs, start = [], None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(flags)))
    return runs


def _trailing(flags: Sequence[bool]) -> int:
    count = 0
    for flag in reversed(flags):
        if not flag:
            break
        count += 1
    return count


def _months(now: datetime) -> list[int]:
    """Days back to the same day and hour of each of the last months (clipped to month ends)."""
    out = []
    for k in range(1, MONTHS_BACK + 1):
        year, month = now.year, now.month - k
        while month < 1:
            month += 12
            year -= 1
        day = min(now.day, _month_days(year, month))
        out.append((now - now.replace(year=year, month=month, day=day)).days)
    return out


def _years(now: datetime, available: int) -> list[int]:
    return [365 * k for k in range(1, YEARS_BACK + 1) if 365 * k < available]


def _month_days(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


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
