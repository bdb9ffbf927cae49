"""Scores: each suggestion against what the recording says happened next.

The part of a recording after a trigger is the ground truth for the suggestion
made at that trigger. For each suggestion:

- the oracle quantity: what the order, arriving after the real lead time, had to
  cover: the demand that actually came over the review period after it, plus
  safety stock for the demand's day-to-day variation at a 95% service level,
  less what was left when it arrived (stock available at the trigger and
  earlier orders' arrivals, less what sold meanwhile; the shop turns away
  orders it cannot serve, so demand before the arrival beyond stock is lost,
  not owed);
- a re-simulation of that stretch with the suggested order arriving after the
  real lead time: units short once it could have arrived (stockout units, and
  lost sales at the unit price) and units left beyond the safety stock at its
  end (overstock units). A suggestion that leaves stock under the reorder point
  once it is in silences the SKU (inventory.low fires once per downward
  crossing): it is also charged the next review period's unserved demand;
- checks: schema valid, one suggestion per trigger, quantity within bounds,
  every evidence id names an event older than the suggestion.

Cost, the figure policies are ranked by, weighs a unit short three times a unit
left over: a lost sale loses the margin and the customer, a spare unit only
ties up cash and shelf.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from evals.replay import Replayed
from events import RestockRecommended

REVIEW_DAYS = 7
Z_95 = 1.65
SHORT_WEIGHT = 3.0
CAP_MULTIPLE = 3


@dataclass(frozen=True)
class Judged:
    suggestion_id: str
    sku: str
    at: str
    quantity: int
    oracle: int
    lead_days: float
    stockout_units: int
    lost_sales: float
    overstock_units: int
    needed: bool
    silenced: bool  # stock still under the reorder point once the order is in
    # False when the recording ends before the lead time and review period do: such a
    # suggestion is checked but not costed, as its future is unknown.
    complete: bool
    valid: bool
    in_bounds: bool
    evidence_valid: bool
    model: str

    @property
    def cost(self) -> float:
        return SHORT_WEIGHT * self.stockout_units + self.overstock_units


@dataclass(frozen=True)
class ScenarioScore:
    triggers: int
    suggestions: int
    duplicates: int
    invalid: int
    out_of_bounds: int
    evidence_invalid: int
    unneeded: int
    silencing: int  # suggestions leaving stock under the reorder point once in
    quantity_error: float  # mean |quantity - oracle| / max(oracle, reorder point)
    stockout_units: int
    lost_sales: float
    overstock_units: int
    cost: float
    latency_p50_ms: float
    input_tokens: int
    output_tokens: int
    model_cost: float

    @property
    def passed(self) -> bool:
        """The hard checks: a run that fails one is wrong, whatever its cost."""
        return not (self.duplicates or self.invalid or self.out_of_bounds or self.evidence_invalid)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(replayed: Replayed) -> list[Judged]:
    world = _World(replayed.events)
    return [world.judge(event) for event in replayed.of_type("restock.recommended")]


def score(
    replayed: Replayed,
    judged: Sequence[Judged],
    *,
    latencies: Sequence[float] = (),
    input_tokens: int = 0,
    output_tokens: int = 0,
    model_cost: float = 0.0,
) -> ScenarioScore:
    suggestions = replayed.of_type("restock.recommended")
    per_trigger = Counter(str(event.data.trigger_event_id) for event in suggestions)
    ids = Counter(event.id for event in suggestions)
    duplicates = sum(n - 1 for n in per_trigger.values()) + sum(n - 1 for n in ids.values())
    costed = [j for j in judged if j.complete]
    catalog = _Catalog(replayed.events)
    errors = [
        abs(j.quantity - j.oracle)
        / max(j.oracle, catalog.at(j.sku, datetime.fromisoformat(j.at)).reorder_point, 1)
        for j in costed
    ]
    ordered = sorted(latencies)
    return ScenarioScore(
        triggers=len({event.id for event in replayed.of_type("inventory.low")}),
        suggestions=len(suggestions),
        duplicates=duplicates,
        invalid=sum(1 for j in judged if not j.valid),
        out_of_bounds=sum(1 for j in judged if not j.in_bounds),
        evidence_invalid=sum(1 for j in judged if not j.evidence_valid),
        unneeded=sum(1 for j in costed if not j.needed),
        silencing=sum(1 for j in costed if j.silenced),
        quantity_error=round(sum(errors) / len(errors), 3) if errors else 0.0,
        stockout_units=sum(j.stockout_units for j in costed),
        lost_sales=round(sum(j.lost_sales for j in costed), 2),
        overstock_units=sum(j.overstock_units for j in costed),
        cost=round(sum(j.cost for j in costed), 1),
        latency_p50_ms=round(ordered[len(ordered) // 2] * 1000, 1) if ordered else 0.0,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model_cost=round(model_cost, 6),
    )


@dataclass
class _Product:
    reorder_point: int
    max_stock: int
    lead_time_days: int
    unit_price: float


class _Catalog:
    """Each SKU's catalog entries in time order: a suggestion is judged by the one in force."""

    def __init__(self, events: Sequence[Any]) -> None:
        self._entries: dict[str, list[tuple[datetime, _Product]]] = defaultdict(list)
        for event in events:
            if event.type == "product.upserted":
                data = event.data
                entry = _Product(
                    data.reorder_point, data.max_stock, data.lead_time_days, float(data.unit_price)
                )
                self._entries[data.sku].append((event.time, entry))

    def at(self, sku: str, when: datetime) -> _Product:
        entries = self._entries[sku]
        in_force = [entry for since, entry in entries if since <= when]
        # A suggestion cannot come before its product; if it does, the first entry judges it.
        return in_force[-1] if in_force else entries[0][1]


class _World:
    """The recording's facts per SKU, indexed for judging suggestions."""

    def __init__(self, events: Sequence[Any]) -> None:
        self.catalog = _Catalog(events)
        self.demand: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        self.arrivals: dict[str, list[tuple[datetime, int, str | None]]] = defaultdict(list)
        self.orders: dict[str, list[tuple[datetime, str]]] = defaultdict(list)  # PO created
        self.received: dict[str, datetime] = {}  # PO id -> arrival
        self.triggers: dict[str, Any] = {}
        self.first_seen: dict[str, datetime] = {}
        self.end = events[-1].time if events else datetime.min
        seen_orders: set[str] = set()
        for event in events:
            self.first_seen.setdefault(event.id, event.time)
            data = event.data
            if event.type == "order.created" and event.id not in seen_orders:
                seen_orders.add(event.id)  # a duplicated delivery is not more demand
                for line in data.lines:
                    self.demand[line.sku].append((event.time, line.quantity))
            elif event.type == "stock.received":
                self.arrivals[data.sku].append((event.time, data.quantity, data.purchase_order_id))
                if data.purchase_order_id:
                    self.received.setdefault(data.purchase_order_id, event.time)
            elif event.type == "inventory.adjusted":
                self.arrivals[data.sku].append((event.time, data.delta, None))
            elif event.type == "purchase_order.created":
                self.orders[data.sku].append((event.time, data.purchase_order_id))
            elif event.type == "inventory.low":
                self.triggers[event.id] = event

    def lead_days(self, sku: str, at: datetime) -> float:
        """The supplier's real lead time around `at`: the next order placed, else the last."""
        placed = self.orders.get(sku, [])
        after = [(t, po) for t, po in placed if t >= at and po in self.received]
        before = [(t, po) for t, po in placed if t < at and po in self.received]
        chosen = after[0] if after else (before[-1] if before else None)
        if chosen is None:
            return float(self.catalog.at(sku, at).lead_time_days)
        created, po = chosen
        return (self.received[po] - created).total_seconds() / 86400

    def judge(self, event: Any) -> Judged:
        data = event.data
        sku = data.sku
        at = event.time
        product = self.catalog.at(sku, at)
        trigger = self.triggers.get(str(data.trigger_event_id))
        stock0 = int(trigger.data.available) if trigger is not None else 0
        lead = self.lead_days(sku, at)
        horizon = at + timedelta(days=lead + REVIEW_DAYS)
        arriving = at + timedelta(days=lead)
        # Earlier purchase orders still open at `at`: their real arrivals in the window.
        open_pos = {
            po
            for t, po in self.orders.get(sku, [])
            if t <= at and not (po in self.received and self.received[po] <= at)
        }
        moves: list[tuple[datetime, int]] = []
        for t, quantity, po in self.arrivals.get(sku, []):
            if not at < t <= horizon:
                continue
            if po is None or po in open_pos:
                moves.append((t, quantity))
        demand = [(t, q) for t, q in self.demand.get(sku, []) if at < t <= horizon]
        days = max(1, math.ceil(lead + REVIEW_DAYS))
        per_day = [0] * days
        for t, q in demand:
            per_day[min(days - 1, int((t - at).total_seconds() // 86400))] += q
        mean = sum(per_day) / days
        std = math.sqrt(sum((x - mean) ** 2 for x in per_day) / days)
        safety = Z_95 * std * math.sqrt(max(lead, 1.0))
        # What the shop had when the order could arrive, selling what it could meanwhile
        # (an order it cannot serve is turned away, not kept), and what came after.
        level = stock0
        for when, change in sorted([*moves, *[(t, -q) for t, q in demand]]):
            if when >= arriving:
                break
            level = max(0, level + change)
        after = sum(q for t, q in demand if t >= arriving) - sum(
            q for t, q in moves if t >= arriving
        )
        oracle = max(0, math.ceil(after + safety - level))
        timeline = sorted([*moves, (arriving, int(data.quantity)), *[(t, -q) for t, q in demand]])
        # Units short before the suggested order could arrive are not this suggestion's
        # doing (the order came as early as it could): only what is short after counts.
        stock, short = stock0, 0
        on_arrival: int | None = None
        for when, change in timeline:
            if on_arrival is None and when > arriving:
                on_arrival = stock
            stock += change
            if stock < 0:
                if when >= arriving:
                    short += -stock
                stock = 0
        overstock = max(0, math.floor(stock - safety))
        silenced = (stock if on_arrival is None else on_arrival) < product.reorder_point
        if silenced:
            # inventory.low fires once per downward crossing: stock still under the reorder
            # point once the order is in means no new signal, so the next review period's
            # demand goes unserved as far as this suggestion is concerned.
            beyond = horizon + timedelta(days=REVIEW_DAYS)
            later = sorted(
                [
                    (t, q)
                    for t, q, po in self.arrivals.get(sku, [])
                    if po is None and horizon < t <= beyond
                ]
                + [(t, -q) for t, q in self.demand.get(sku, []) if horizon < t <= beyond]
            )
            for _, change in later:
                stock += change
                if stock < 0:
                    short += -stock
                    stock = 0
        valid = True
        try:
            RestockRecommended.model_validate(data.model_dump())
        except ValidationError:
            valid = False
        cap = CAP_MULTIPLE * product.max_stock
        evidence_valid = all(
            evidence in self.first_seen and self.first_seen[evidence] <= at
            for evidence in data.evidence
        )
        return Judged(
            suggestion_id=str(data.recommendation_id),
            sku=sku,
            at=at.isoformat(),
            quantity=int(data.quantity),
            oracle=oracle,
            lead_days=round(lead, 2),
            stockout_units=short,
            lost_sales=round(short * product.unit_price, 2),
            overstock_units=overstock,
            needed=oracle > 0,
            silenced=silenced,
            complete=horizon <= self.end,
            valid=valid,
            in_bounds=0 < int(data.quantity) <= cap,
            evidence_valid=evidence_valid,
            model=str(data.model),
        )


def available_series(events: Sequence[Any], sku: str) -> list[tuple[datetime, int]]:
    """Units available to sell over time, as the inventory service counted them."""
    level = 0
    series: list[tuple[datetime, int]] = []
    for event in events:
        data = event.data
        change = 0
        if event.type == "stock.received" and data.sku == sku:
            change = data.quantity
        elif event.type == "inventory.adjusted" and data.sku == sku:
            change = data.delta
        elif event.type in ("inventory.reserved", "inventory.released"):
            sign = -1 if event.type == "inventory.reserved" else 1
            change = sign * sum(line.quantity for line in data.lines if line.sku == sku)
        if change:
            level += change
            series.append((event.time, level))
    return series


def daily_demand(events: Sequence[Any], sku: str) -> Mapping[str, int]:
    seen: set[str] = set()
    days: Counter[str] = Counter()
    for event in events:
        if event.type == "order.created" and event.id not in seen:
            seen.add(event.id)
            for line in event.data.lines:
                if line.sku == sku:
                    days[event.time.date().isoformat()] += line.quantity
    return days
