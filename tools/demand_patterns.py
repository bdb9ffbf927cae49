"""Patterns in a SKU's demand that only a long memory shows, each with its evidence bar.

A pattern is a multiplier on the ordinary level of demand, for each day of the
past and each day ahead: a promotion (the price cut is its flag), a day of the
month (paydays, a monthly market), the same time last year (a season). The
forecast divides the past by the multipliers before fitting its model, so the
model sees the ordinary level, and multiplies its forecast by the multipliers
of the days ahead.

A pattern is used only when the memory shows it beyond chance: the same phase
of earlier cycles (not whatever came last), consistently, by more than the
demand's own day-to-day noise allows. Where nothing repeats, no pattern is
found, and the forecast is exactly the one made without memory.

Days are 24-hour buckets ending at the forecast's moment: past bucket i of n
covers the day that ended (n - 1 - i) days before it; its calendar date is the
date of its middle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

PROMOTION_CUT = 0.95  # a day's price this far under the usual one is a promotion day
PROMOTION_Z = 3.0  # how far from chance a promotion's lift must stand
DAY_Z = 3.5  # ... a day of the month's departure from the level, pooled over months
DAY_Z_NEIGHBOUR = 2.0  # ... when a neighbouring day departs the same way at least this far
DAY_Z_ALONE = 5.0  # ... and when none does
DAY_AGREE = 2 / 3  # ... in this share of the months at least, the same way
MIN_MONTHS = 3  # of history before a day of the month counts
MONTH_LEVEL_DAYS = 29  # the rolling median a day of the month is measured against
YEAR = 365
YEAR_Z = 4.0  # a single earlier year cannot be checked against another: far from chance
YEAR_SMOOTH = 3  # days either side of a date last year
LEVEL_DAYS = 28


@dataclass(frozen=True)
class Pattern:
    name: str
    past: np.ndarray  # multiplier of each past day
    future: np.ndarray  # multiplier of each day ahead
    spread: float  # relative uncertainty of the multipliers ahead
    note: str


def dispersion(y: np.ndarray, level: np.ndarray) -> float:
    """Variance over mean of the demand around its level: 1 for Poisson, more for lumps."""
    known = level > 0
    if known.sum() < 7:
        return 1.0
    return max(1.0, float(np.var(y[known] - level[known]) / np.mean(level[known])))


def promotions(
    y: np.ndarray, prices: Sequence[float | None], horizon: int
) -> tuple[Pattern, list[bool]] | None:
    """Days at a cut price lift demand as earlier runs at a cut price did.

    The ongoing promotion (the last days at a cut price) is expected to last as
    long as earlier ones did (the median), and to lift demand as they did.
    """
    known = [p for p in prices if p is not None]
    if not known:
        return None
    usual = float(np.median(known))
    flags = [p is not None and usual > 0 and p <= usual * PROMOTION_CUT for p in prices]
    runs = _runs(flags)
    if not runs:
        return None
    past = np.ones(len(y))
    lifts, lengths, excess, noise = [], [], 0.0, 0.0
    ongoing = runs[-1] if runs[-1][1] == len(flags) else None
    for start, end in runs:
        before = [y[i] for i in range(max(0, start - LEVEL_DAYS), start) if not flags[i]]
        if len(before) < 7:
            continue
        base = float(np.mean(before))
        if base <= 0:
            continue
        lift = float(np.mean(y[start:end])) / base
        past[start:end] = max(lift, 0.2)
        excess += float(np.sum(y[start:end])) - base * (end - start)
        noise += base * (end - start)
        if (start, end) != ongoing:
            lifts.append(lift)
            lengths.append(end - start)
    if noise <= 0 or abs(excess) < PROMOTION_Z * math.sqrt(noise * 2):
        return None
    future = np.ones(horizon)
    note = f"{len(runs)} promotion(s) seen, their days left out of the ordinary level"
    if ongoing is not None:
        lift = float(np.median(lifts)) if lifts else float(past[ongoing[0]])
        so_far = ongoing[1] - ongoing[0]
        # Without an earlier promotion to go by, one that has run d days is taken to run d more.
        length = float(np.median(lengths)) if lengths else 2.0 * so_far
        left = max(0.0, length - so_far)
        for h in range(horizon):
            share = min(1.0, max(0.0, left - h))
            future[h] = 1 + (max(lift, 0.2) - 1) * share
        note = (
            f"a promotion {so_far} day(s) in; {len(lifts)} earlier one(s) lifted demand "
            f"x{lift:.2f} for {length:.0f} days"
        )
    spread = float(np.std(lifts) / np.mean(lifts)) if len(lifts) > 1 else 0.25
    return Pattern("promotion", past, future, spread, note), flags


def day_of_month(
    y: np.ndarray, dates: Sequence[date], ahead: Sequence[date], promotion_days: Sequence[bool]
) -> Pattern | None:
    """Days of the month that sell unlike the rest, month after month (paydays, markets)."""
    n = len(y)
    if n < MIN_MONTHS * 30:
        return None
    level = _rolling_median(y, MONTH_LEVEL_DAYS)
    # Days of the week first: a busy weekday falls on the same day of the month in some
    # months by the calendar's chance, which is no monthly pattern.
    known = level > 0
    weekday = np.array([d.weekday() for d in dates])
    factors = np.ones(7)
    for day in range(7):
        mine = known & (weekday == day)
        if mine.sum() >= 5:
            # Trimmed, so that the days a monthly pattern lifts do not lift their weekday.
            ratios = np.sort(y[mine] / level[mine])
            cut = len(ratios) // 5
            factors[day] = max(float(ratios[cut : len(ratios) - cut].mean()), 0.2)
    level = level * factors[weekday]
    disp = dispersion(y, level)
    scores: dict[int, tuple[float, float, float]] = {}  # day: z, factor, its spread
    for day in range(1, 32):
        index = [
            i for i in range(n) if dates[i].day == day and level[i] > 0 and not promotion_days[i]
        ]
        if len(index) < MIN_MONTHS:
            continue
        excess = y[index] - level[index]
        z = float(excess.sum()) / math.sqrt(disp * float(level[index].sum()))
        agree = max((excess > 0).mean(), (excess < 0).mean())
        if agree >= DAY_AGREE:
            ratios = y[index] / level[index]
            factor = max(float(y[index].sum() / level[index].sum()), 0.2)
            scores[day] = (z, factor, float(np.std(ratios)) / math.sqrt(len(index)))
    special: dict[int, tuple[float, float]] = {}
    for day, (z, factor, spread) in scores.items():
        # A day alone must stand far from chance; beside a neighbour that departs the same
        # way (paydays and markets last a few days), less far.
        beside = [scores[d][0] for d in (day - 1, day + 1) if d in scores]
        neighboured = any(other * z > 0 and abs(other) >= DAY_Z_NEIGHBOUR for other in beside)
        if abs(z) >= (DAY_Z if neighboured else DAY_Z_ALONE):
            special[day] = (factor, spread)
    if not special:
        return None
    past = np.array([special.get(d.day, (1.0, 0.0))[0] for d in dates])
    future = np.array([special.get(d.day, (1.0, 0.0))[0] for d in ahead])
    spread = max(s for _, s in special.values()) / max(f for f, _ in special.values())
    days = ", ".join(f"{d} (x{f:.2f})" for d, (f, _) in sorted(special.items()))
    note = f"days of the month that sell unlike the rest in the months seen: {days}"
    return Pattern("day of month", past, future, spread, note)


def last_year(y: np.ndarray, horizon: int) -> Pattern | None:
    """The same dates last year, where demand then moved away from its level by more
    than chance: a season, taken at this year's level."""
    n = len(y)
    if n < YEAR + 2 * YEAR_SMOOTH + 1:
        return None
    smooth = _centered_mean(y, YEAR_SMOOTH)
    # Last year's ordinary level: the median of its four-week means, which a season of a
    # few weeks does not move.
    year = y[max(0, n - YEAR - LEVEL_DAYS) : n - LEVEL_DAYS]
    blocks = [float(np.mean(year[i : i + LEVEL_DAYS])) for i in range(0, len(year) - 27, 7)]
    ordinary = float(np.median(blocks)) if blocks else 0.0
    if ordinary <= 0:
        return None
    disp = dispersion(year, np.full(len(year), ordinary))
    then = n - YEAR  # today, a year ago
    span = range(max(0, then - LEVEL_DAYS), min(n, then + horizon))
    seen = float(sum(y[i] for i in span))
    z = (seen - ordinary * len(span)) / math.sqrt(disp * ordinary * len(span))
    ahead = float(sum(y[then : then + horizon]))
    z_ahead = (ahead - ordinary * horizon) / math.sqrt(disp * ordinary * horizon)
    if max(abs(z), abs(z_ahead)) < YEAR_Z:
        return None
    profile = np.clip(smooth / ordinary, 0.2, 6.0)
    past = np.ones(n)
    past[YEAR:] = profile[: n - YEAR]
    future = np.array([profile[then + h] if then + h < n else 1.0 for h in range(horizon)])
    note = (
        f"a season: this time last year demand ran x{ahead / (ordinary * horizon):.2f} of "
        f"that year's ordinary level over the next {horizon} days"
    )
    return Pattern("last year", past, future, 0.2, note)


def _rolling_median(y: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    return np.array([np.median(y[max(0, i - half) : i + half + 1]) for i in range(len(y))])


def _centered_mean(y: np.ndarray, half: int) -> np.ndarray:
    return np.array([np.mean(y[max(0, i - half) : i + half + 1]) for i in range(len(y))])


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
