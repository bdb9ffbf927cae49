"""Families of shop worlds with randomized parameters, and the split of their seeds.

A family is a kind of world (a trend, a monthly cycle, a slowing supplier...);
each seed draws its parameters (demand level, lead time, reorder point, the size
and timing of the effect) and its noise. Policies are tuned on the training
seeds only; the eval reports on held-out seeds, by family, with the spread across
them, so that a policy fitted to a few hand-made worlds shows as such. The gate
seed is the one CI replays for every family (a regression check, tuned against
like the training seeds); the held-out seeds are looked at only for the report.

The buyer in these worlds orders by their own min/max rule whatever a suggestion
says (`Reviewer(min_max=True)`), so a world does not depend on the policy under
test: every contender is judged on the same stock, triggers and deliveries, and
a world is made from its seed on the fly (`agentbus eval` reads a
`*.worlds.json` spec, such as `fixtures/families/held-out.worlds.json`, rather
than a recording). `evals.simulate --families` still writes a world as a
recording, in the form `agentbus eval` takes from anyone.

`history_matters` marks the families whose best decision needs more than the
last weeks of demand and the catalog: a cycle longer than that, a promotion seen
before, a supplier slower than the catalog says.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from agentbus.errors import ConfigurationError
from evals.scenarios import START, Demand, Item, Reviewer, Scenario, on_promotion, poisson

REVIEW_DAYS = 7
TRAINING_SEEDS = tuple(range(1, 11))
GATE_SEEDS = (501, 502, 503, 504)
HELD_OUT_SEEDS = (1001, 1002, 1003, 1004, 1005)
SPLITS = {"train": TRAINING_SEEDS, "gate": GATE_SEEDS, "held-out": HELD_OUT_SEEDS}


@dataclass(frozen=True)
class Family:
    name: str
    notes: str
    history_matters: bool
    draw: Callable[[random.Random, str], Item]
    days: Callable[[random.Random], int]
    # The fewest days in which the family's effect shows (the same phase seen before, a
    # supplier's third slow delivery): a short world, for a quick gate, stops there.
    least: int

    def world(self, seed: int, *, short: bool = False) -> Scenario:
        return self.together((seed,), short=short)

    def together(self, seeds: Sequence[int], *, short: bool = False) -> Scenario:
        """One world holding a product drawn from each seed (one seed: the seed's world)."""
        items, longest = [], 0
        for seed in seeds:
            rng = random.Random(f"{self.name}/{seed}")
            items.append(self.draw(rng, f"{self.name.upper().replace('_', '-')}-{seed}"))
            longest = max(longest, self.days(rng))
        label = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        return Scenario(
            name=f"{self.name}-{label}" + ("-short" if short else ""),
            family=self.name,
            notes=self.notes,
            items=tuple(items),
            days=min(longest, self.least) if short else longest,
            seed=seeds[0],
            history_matters=self.history_matters,
            reviewer=Reviewer(min_max=True),
        )


def _shelf(rng: random.Random, mean: float, peak: float, lead: int) -> tuple[int, int]:
    """A reorder point covering the lead time and some, and a shelf (max stock) that holds
    that and the lead time and a review period at the busiest rate the shop plans for, as
    a shop sizes its shelf for its season."""
    reorder_point = max(2, round(mean * (lead + rng.uniform(0.5, 6.0))))
    cover = peak * (lead + REVIEW_DAYS) * rng.uniform(1.1, 1.6)
    return reorder_point, reorder_point + max(5, round(cover))


def _item(
    rng: random.Random,
    sku: str,
    demand: Demand,
    mean: float,
    *,
    peak: float | None = None,
    **extra: Any,
) -> Item:
    lead = rng.randint(2, 10)
    reorder_point, max_stock = _shelf(rng, mean, mean if peak is None else peak, lead)
    price = Decimal(rng.randint(400, 6000)) / 100
    return replace(Item(sku, demand, lead, reorder_point, max_stock, price), **extra)


def stationary(rng: random.Random, sku: str) -> Item:
    mean = rng.uniform(3, 12)
    return _item(rng, sku, lambda day, r: poisson(mean, r), mean)


def trend(direction: int) -> Callable[[random.Random, str], Item]:
    def draw(rng: random.Random, sku: str) -> Item:
        growth = direction * rng.uniform(0.005, 0.015)
        mean = rng.uniform(3, 6) if direction > 0 else rng.uniform(8, 16)

        def demand(day: int, r: random.Random) -> int:
            return poisson(max(0.3, mean * (1 + growth) ** day), r)

        # The shelf is sized for where the product is heading over the months ahead.
        return _item(rng, sku, demand, mean, peak=max(mean, mean * (1 + growth) ** 120))

    return draw


def weekly(rng: random.Random, sku: str) -> Item:
    mean = rng.uniform(3, 10)
    profile = [rng.uniform(0.6, 1.2) for _ in range(7)]
    for busy in rng.sample(range(7), 2):
        profile[busy] = rng.uniform(1.8, 3.0)

    def demand(day: int, r: random.Random) -> int:
        weekday = (START + timedelta(days=day)).weekday()
        return poisson(mean * profile[weekday], r)

    return _item(rng, sku, demand, mean, peak=mean * sum(profile) / 7 * 1.3)


def monthly(rng: random.Random, sku: str) -> Item:
    """A few days a month at several times the usual demand (paydays, a monthly market)."""
    mean = rng.uniform(3, 10)
    first = rng.randint(1, 24)
    length = rng.randint(3, 6)
    lift = rng.uniform(2.5, 4.0)

    def demand(day: int, r: random.Random) -> int:
        on = first <= (START + timedelta(days=day)).day < first + length
        return poisson(mean * (lift if on else 1.0), r)

    busy = (length * lift + (REVIEW_DAYS - length)) / REVIEW_DAYS
    return _item(rng, sku, demand, mean, peak=mean * max(busy, 1.0))


def yearly(rng: random.Random, sku: str) -> Item:
    mean = rng.uniform(2, 5)
    start = rng.randint(30, 70)
    length = rng.randint(20, 40)
    peak = rng.uniform(2.5, 4.0)

    def demand(day: int, r: random.Random) -> int:
        season = 0 <= (day % 365) - start < length
        return poisson(mean * (peak if season else 1.0), r)

    return _item(rng, sku, demand, mean, peak=mean * peak)


def promotion(rng: random.Random, sku: str) -> Item:
    mean = rng.uniform(3, 8)
    every = rng.randint(28, 45)
    length = rng.randint(5, 10)
    lift = rng.uniform(2.5, 4.0)
    first = rng.randint(20, 35)
    runs = tuple(range(first, 400, every))
    on = on_promotion(runs, length)
    return _item(
        rng,
        sku,
        lambda day, r: poisson(mean * (lift if on(day) else 1.0), r),
        mean,
        peak=mean * lift,
        promotion_days=on,
        promotion_cut=Decimal(rng.choice(["0.20", "0.25", "0.30"])),
    )


def lead_time_drift(rng: random.Random, sku: str) -> Item:
    """The supplier slows down to two or three times the catalog's lead time, which stays."""
    mean = rng.uniform(3, 10)
    item = _item(rng, sku, lambda day, r: poisson(mean, r), mean)
    catalog = item.lead_time_days
    slower = catalog * rng.uniform(2.0, 3.0)
    begins, ramp = rng.randint(10, 30), rng.randint(0, 40)

    def actual(day: int) -> int:
        share = 1.0 if day >= begins + ramp else max(0.0, (day - begins) / max(ramp, 1))
        return round(catalog + (slower - catalog) * share)

    return replace(item, actual_lead_time=actual)


def supplier_noise(rng: random.Random, sku: str) -> Item:
    """The catalog's lead time is right; some deliveries come a day or two late."""
    mean = rng.uniform(3, 10)
    item = _item(rng, sku, lambda day, r: poisson(mean, r), mean)
    late = rng.uniform(0.05, 0.15)
    salt = rng.random()

    def actual(day: int) -> int:
        draw = random.Random(f"{salt}/{day}").random()
        return item.lead_time_days + (0 if draw >= late else 1 if draw >= late / 4 else 2)

    return replace(item, actual_lead_time=actual)


def intermittent(rng: random.Random, sku: str) -> Item:
    chance = rng.uniform(0.1, 0.35)
    size = rng.uniform(1.0, 4.0)

    def demand(day: int, r: random.Random) -> int:
        return 1 + poisson(size, r) if r.random() < chance else 0

    return _item(rng, sku, demand, chance * (1 + size), peak=1.5 * chance * (1 + size))


def new_product(rng: random.Random, sku: str) -> Item:
    """Launched mid-stream with a small opening stock: the first low comes with days of history."""
    mean = rng.uniform(4, 12)
    launch = rng.randint(10, 30)

    def demand(day: int, r: random.Random) -> int:
        return poisson(mean, r) if day >= launch else 0

    item = _item(rng, sku, demand, mean)
    opening = item.reorder_point + round(mean * rng.uniform(1.0, 4.0))
    return replace(item, introduced_on=launch, opening_stock=opening)


def reorder_revised(rng: random.Random, sku: str) -> Item:
    """Demand moves to a new level and the buyer revises the reorder point and shelf to match."""
    mean = rng.uniform(4, 10)
    change = rng.choice([rng.uniform(1.5, 2.2), rng.uniform(0.45, 0.7)])
    revised_on = rng.randint(40, 60)

    def demand(day: int, r: random.Random) -> int:
        return poisson(mean * (change if day >= revised_on else 1.0), r)

    item = _item(rng, sku, demand, mean)
    reorder_point = max(2, round(item.reorder_point * change))
    max_stock = max(reorder_point + 5, round(item.max_stock * change))
    return replace(item, revisions=((revised_on + rng.randint(3, 10), reorder_point, max_stock),))


def _span(low: int, high: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(low, high)


FAMILIES: tuple[Family, ...] = (
    Family(
        "stationary",
        "Stationary Poisson demand: the control.",
        False,
        stationary,
        _span(100, 130),
        70,
    ),
    Family("trend_up", "Demand growing 0.5-1.5% a day.", False, trend(1), _span(100, 130), 70),
    Family("trend_down", "Demand shrinking 0.5-1.5% a day.", False, trend(-1), _span(100, 130), 70),
    Family("weekly", "Two busy days a week at 2-3x the others.", False, weekly, _span(90, 120), 70),
    Family(
        "monthly",
        "A few days each month at 2.5-4x demand (paydays), the same days every month.",
        True,
        monthly,
        _span(190, 230),
        120,
    ),
    Family(
        "yearly",
        "A season of 20-40 days at 2.5-4x demand, seen once a year before.",
        True,
        yearly,
        lambda rng: 365 + 120,
        365 + 120,
    ),
    Family(
        "promotion",
        "A price cut of 20-30% every 4-6 weeks for 5-10 days, lifting demand 2.5-4x.",
        True,
        promotion,
        _span(150, 190),
        110,
    ),
    Family(
        "lead_time_drift",
        "The supplier slows to 2-3x the catalog's lead time, which is never updated.",
        True,
        lead_time_drift,
        _span(110, 140),
        100,
    ),
    Family(
        "supplier_noise",
        "The catalog's lead time holds; 5-15% of deliveries come a day or two late.",
        False,
        supplier_noise,
        _span(110, 140),
        70,
    ),
    Family(
        "intermittent",
        "Sales on 10-35% of days, in lumps.",
        False,
        intermittent,
        _span(120, 160),
        90,
    ),
    Family(
        "new_product",
        "A product launched mid-stream with a small opening stock and no history.",
        False,
        new_product,
        _span(80, 100),
        70,
    ),
    Family(
        "reorder_revised",
        "Demand moves to a new level and the reorder point and shelf are revised to match.",
        False,
        reorder_revised,
        _span(110, 140),
        90,
    ),
)


def family(name: str) -> Family:
    for candidate in FAMILIES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def worlds(
    split: str,
    seeds: tuple[int, ...] | None = None,
    names: Sequence[str] | None = None,
    *,
    short: bool = False,
    together: bool = False,
) -> list[Scenario]:
    chosen = seeds if seeds is not None else SPLITS[split]
    kinds = FAMILIES if names is None else tuple(family(name) for name in names)
    if together:
        return [candidate.together(chosen, short=short) for candidate in kinds]
    return [candidate.world(seed, short=short) for candidate in kinds for seed in chosen]


def from_spec(path: Path) -> list[Scenario]:
    """The worlds a `*.worlds.json` spec names: {"split": "held-out"}, or {"seeds": [...]},
    and optionally {"families": [...]} (all of them by default), {"short": true} (each
    world cut to the fewest days its family's effect needs) and {"together": true} (one
    world per family, holding a product from each seed)."""
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{path}: a worlds spec is a JSON object")
    split, seeds, names = spec.get("split"), spec.get("seeds"), spec.get("families")
    if seeds is None and split not in SPLITS:
        raise ConfigurationError(f"{path}: give seeds, or a split ({', '.join(SPLITS)})")
    if seeds is not None and not (
        isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)
    ):
        raise ConfigurationError(f"{path}: seeds must be a list of integers")
    known = {candidate.name for candidate in FAMILIES}
    if names is not None:
        if not isinstance(names, list):
            raise ConfigurationError(f"{path}: families must be a list of names")
        unknown = [str(name) for name in names if name not in known]
        if unknown:
            raise ConfigurationError(
                f"{path}: unknown family {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
    short, together = spec.get("short", False), spec.get("together", False)
    if not isinstance(short, bool) or not isinstance(together, bool):
        raise ConfigurationError(f"{path}: short and together are true or false")
    chosen = None if seeds is None else tuple(seeds)
    return worlds(str(split), chosen, names, short=short, together=together)
