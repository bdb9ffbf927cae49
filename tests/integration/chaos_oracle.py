"""The chaos runs' oracle and stream: what the shop must end up with, and what is sent.

`build_stream` makes a seeded stream (with re-sent duplicates); `Oracle` is a
sequential model of the contract's rules over the publish order, which imports
nothing of the services; `compare` sets the services' final states against it.

Why a sequential model is exact here: inventory applies its queue in publish
order (on Kafka, each subject's events in order: a SKU's chain never spans two
partitions), and every event of an order follows the order's causal chain.
What is left to timing is modelled as such and kept away from everything else:

- an order over the payment limit holds stock until its rejection comes back,
  at a moment nobody knows: such orders buy `LUX_SKU` only, stocked so deep that
  no decision on it depends on the hold;
- a cancellation sent right after its order races the payment: those orders buy
  `RACE_SKU` only (stocked as deep), either outcome is accepted, and the
  expected stock follows the outcome the service reports;
- a cancellation of an order that is rejected anyway may win or lose against the
  rejection: only the reason varies;
- a cancellation sent before its order (it overtakes it) rejects it for sure;
- a negative adjustment is sent only when it surely fits, or for `DEAD_SKU`,
  which never has stock, so that it surely is dead-lettered.

The oracle raises `AmbiguousStream` if the stream ever asks it for a decision
that timing could change, so the stream's design is checked, not assumed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agentbus.envelope import Event, new_event
from events import (
    InventoryAdjusted,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    ProductUpserted,
    StockReceived,
)

LIMIT = Decimal("5000.00")
LUX_SKU = "LUX-001"  # 2,600.00 a unit: one is authorized, two are over the limit
LUX_PRICE = Decimal("2600.00")
RACE_SKU = "CXL-001"  # orders cancelled right after they are placed
DEAD_SKU = "DEAD-001"  # never stocked: a negative adjustment of it is dead-lettered
# Unordered streams: stock that only ever goes down, by adjustments that surely fit, so
# that each crosses its reorder point once whatever order its events are applied in.
LOW_SKUS = tuple(f"LOW-{n:03d}" for n in range(4))
LOW_STOCK = 8  # the reorder point is 5
DEEP_STOCK = 1_000_000
OPENING_STOCK = 30
PRICES = (Decimal("4.50"), Decimal("9.99"), Decimal("12.00"), Decimal("25.00"))
START = datetime(2026, 11, 1, tzinfo=UTC)


Outcome = tuple[str, str | None]
CONFIRMED: Outcome = ("confirmed", None)
CANCELLED: Outcome = ("rejected", "cancelled")
OUT_OF_STOCK: Outcome = ("rejected", "out_of_stock")
PAYMENT_FAILED: Outcome = ("rejected", "payment_failed")


# -- the oracle ----------------------------------------------------------------------


class AmbiguousStream(ValueError):
    """The stream asks for a decision that the timing of the services could change."""


@dataclass
class Oracle:
    """The contract's rules, applied one event at a time in publish order.

    `solid[sku]` is on_hand once every outcome known so far has settled (confirmed
    orders committed); `maybe[sku]` is stock that may or may not be held when a
    later event is applied (a reservation released at an unknown moment, or one
    whose fate is a race). Available stock lies in [solid - maybe, solid]; every
    decision must come out the same anywhere in that range.
    """

    limit: Decimal = LIMIT
    solid: dict[str, int] = field(default_factory=dict)
    maybe: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, set[Outcome]] = field(default_factory=dict)
    lines: dict[str, dict[str, int]] = field(default_factory=dict)
    racy: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    dead_letters: int = 0

    def lowest_available(self, sku: str) -> int:
        return self.solid.get(sku, 0) - self.maybe.get(sku, 0)

    def apply(self, event: Event[Any]) -> None:
        if event.id in self.seen:
            return  # a duplicate: consumers treat an id they applied as done
        data = event.data
        if event.type == "product.upserted":
            self.solid.setdefault(data.sku, 0)
        elif event.type == "stock.received":
            self.solid[data.sku] = self.solid.get(data.sku, 0) + data.quantity
        elif event.type == "inventory.adjusted":
            if not self._adjust(data.sku, data.delta):
                self.dead_letters += 1
                return  # rejected, so not applied: a later copy gets a fresh try
        elif event.type == "order.created":
            self._created(data)
        elif event.type == "order.cancelled":
            self._cancelled(data.order_id)
        else:
            raise AmbiguousStream(f"the oracle does not model {event.type}")
        self.seen.add(event.id)

    def _adjust(self, sku: str, delta: int) -> bool:
        # on_hand never goes below zero; what is reserved leaves at confirmation.
        if self.lowest_available(sku) + delta >= 0:
            self.solid[sku] = self.solid.get(sku, 0) + delta
            return True
        if self.solid.get(sku, 0) + delta < 0:
            return False
        raise AmbiguousStream(f"adjusting {sku} by {delta:+d} depends on timing")

    def _created(self, data: OrderCreated) -> None:
        order_id = data.order_id
        if order_id in self.outcomes:
            return  # cancelled before it was placed: rejected for good, nothing held
        skus = [line.sku for line in data.lines]
        if len(set(skus)) != len(skus):
            raise AmbiguousStream("orders naming a SKU twice (invalid) are not modelled")
        wanted = {line.sku: line.quantity for line in data.lines}
        fits = all(q <= self.lowest_available(sku) for sku, q in wanted.items())
        short = any(q > self.solid.get(sku, 0) for sku, q in wanted.items())
        if fits == short:
            raise AmbiguousStream(f"whether {order_id} fits depends on timing")
        if short:  # all lines or none
            self.outcomes[order_id] = {OUT_OF_STOCK}
            return
        self.lines[order_id] = wanted
        total = sum((Decimal(line.quantity) * line.unit_price for line in data.lines), Decimal(0))
        if total > self.limit:
            # Reserved, then released when the rejection comes back: no net change,
            # but held until a moment nobody knows.
            self.outcomes[order_id] = {PAYMENT_FAILED}
            for sku, q in wanted.items():
                self.maybe[sku] = self.maybe.get(sku, 0) + q
            return
        self.outcomes[order_id] = {CONFIRMED}
        for sku, q in wanted.items():
            self.solid[sku] -= q

    def _cancelled(self, order_id: str) -> None:
        outcomes = self.outcomes.get(order_id)
        if outcomes is None:
            self.outcomes[order_id] = {CANCELLED}  # it overtook its order
        elif outcomes == {CONFIRMED}:
            # The cancellation races the payment: either may win.
            outcomes.add(CANCELLED)
            self.racy.add(order_id)
            for sku, q in self.lines[order_id].items():
                self.solid[sku] += q
                self.maybe[sku] = self.maybe.get(sku, 0) + q
        elif all(status == "rejected" for status, _ in outcomes):
            outcomes.add(CANCELLED)  # rejected either way; only the reason may vary

    def expected_inventory(self, actual_orders: dict[str, Any]) -> dict[str, dict[str, int]]:
        """Every SKU's final level; racy orders count as the services decided them."""
        on_hand = dict(self.solid)
        for order_id in self.racy:
            if (actual_orders.get(order_id) or {}).get("status") == "confirmed":
                for sku, q in self.lines[order_id].items():
                    on_hand[sku] -= q
        return {
            sku: {"on_hand": n, "reserved": 0, "available": n} for sku, n in sorted(on_hand.items())
        }


# -- the stream ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    events: list[Event[Any]]  # in publish order, duplicates included
    originals: int
    duplicates: int
    opening: int = 0  # the catalog and opening stock: the first events, before any copy

    @property
    def orders(self) -> int:
        return len({e.data.order_id for e in self.events if e.type == "order.created"})


def build_stream(
    seed: int,
    events: int,
    *,
    skus: int = 20,
    duplicate_rate: float = 0.10,
    limit: Decimal = LIMIT,
    ordered: bool = True,
) -> Stream:
    """Catalog and opening stock, then `events` (or a few more) mixed events, then
    about `duplicate_rate` of everything re-sent (same id, same body) later on.

    Not `ordered`: for a broker that keeps order only per topic and key (Kafka, a topic
    per event type), where a receipt may be applied after an order published later.
    Then no decision may depend on the order of events of different types: the SKUs
    ordered are stocked deep, orders that must be short name `DEAD_SKU` on one line,
    cancellations never overtake on purpose (they may anyway, as racy ones), and low
    stock comes from `LOW_SKUS`, which only lose stock, within what they hold.
    """
    rng = random.Random(seed)
    names = [f"SKU-{n:03d}" for n in range(skus)]
    lows = [] if ordered else list(LOW_SKUS)
    originals: list[Event[Any]] = []
    model = Oracle(limit)  # what is safe to send next
    clock = START

    def add(data: Any, event_id: str) -> None:
        nonlocal clock
        clock += timedelta(seconds=1)
        event = new_event(data, source="/tests/chaos", id=event_id, time=clock)
        originals.append(event)
        model.apply(event)

    for sku in [*names, *lows, LUX_SKU, RACE_SKU, DEAD_SKU]:
        price = LUX_PRICE if sku == LUX_SKU else Decimal("9.99")
        add(
            ProductUpserted(
                sku=sku,
                name=f"Product {sku}",
                description="",
                category="chaos",
                unit_cost=(price / 2).quantize(Decimal("0.01")),
                unit_price=price,
                lead_time_days=3,
                reorder_point=5,
                max_stock=100,
                supplier="chaos supplies",
            ),
            f"product-{sku}",
        )
    for sku in [*names, *lows, LUX_SKU, RACE_SKU]:
        quantity = DEEP_STOCK if sku in (LUX_SKU, RACE_SKU) or not ordered else OPENING_STOCK
        add(
            StockReceived(sku=sku, quantity=LOW_STOCK if sku in lows else quantity),
            f"opening-{sku}",
        )
    opening = len(originals)

    def order(order_id: str, lines: list[tuple[str, int, Decimal]]) -> OrderCreated:
        return OrderCreated(
            order_id=order_id,
            customer_id=f"C-{rng.randint(1, 500):03d}",
            lines=[OrderLine(sku=s, quantity=q, unit_price=p) for s, q, p in lines],
            currency="EUR",
        )

    cancels_due: list[tuple[int, str]] = []  # (when, order id) for racy cancellations
    rejected: list[str] = []
    n = 0
    while len(originals) - opening < events:
        n += 1
        for due in [c for c in cancels_due if c[0] <= n]:
            cancels_due.remove(due)
            add(OrderCancelled(order_id=due[1], reason="changed my mind"), f"cancel-{due[1]}")
        roll = rng.random()
        order_id = f"O-{n:06d}"
        if roll < 0.60:  # an ordinary order, now and then for more than is left
            lines = [
                (sku, rng.randint(8, 20) if rng.random() < 0.1 else rng.randint(1, 3), price)
                for sku in rng.sample(names, k=rng.choice((1, 1, 2, 3)))
                for price in [rng.choice(PRICES)]
            ]
            if not ordered and rng.random() < 0.15:
                lines.append((DEAD_SKU, 1, PRICES[0]))  # short for sure: all lines or none
            add(order(order_id, lines), f"created-{order_id}")
        elif roll < 0.66:  # luxury: one unit is authorized, two are over the limit
            add(order(order_id, [(LUX_SKU, rng.choice((1, 2)), LUX_PRICE)]), f"created-{order_id}")
        elif roll < 0.70 or (not ordered and roll < 0.74):
            # Cancelled, and the cancellation races the payment.
            add(
                order(order_id, [(RACE_SKU, rng.randint(1, 3), Decimal("9.99"))]),
                f"created-{order_id}",
            )
            cancels_due.append((n + rng.randint(0, 6), order_id))
        elif roll < 0.74:  # the cancellation overtakes its order
            add(OrderCancelled(order_id=order_id, reason="never mind"), f"cancel-{order_id}")
            add(order(order_id, [(rng.choice(names), 1, PRICES[0])]), f"created-{order_id}")
        elif roll < 0.76 and rejected:  # cancelling an order that is rejected anyway
            target = rng.choice(rejected[-50:])
            rejected.remove(target)
            add(OrderCancelled(order_id=target, reason="too slow"), f"cancel-{target}")
        elif roll < 0.94:
            add(StockReceived(sku=rng.choice(names), quantity=rng.randint(4, 16)), f"stock-{n}")
        else:
            sku = rng.choice(names)
            room = model.lowest_available(sku)
            if lows and rng.random() < 0.4:
                sku = rng.choice(lows)
                room = model.lowest_available(sku)
                # Only ever down: a rise applied late would make an earlier cut not fit.
                sku, delta = (sku, -rng.randint(1, min(2, room))) if room > 0 else (DEAD_SKU, -1)
            elif rng.random() < 0.2:
                sku, delta = DEAD_SKU, -1  # surely refused: dead-lettered
            elif room > 0 and rng.random() < 0.5:
                delta = -rng.randint(1, min(3, room))
            else:
                delta = rng.randint(1, 5)
            add(InventoryAdjusted(sku=sku, delta=delta, reason="stock count"), f"adjust-{n}")
        created = model.outcomes.get(order_id)
        if created and CANCELLED not in created and all(s == "rejected" for s, _ in created):
            rejected.append(order_id)
    for _, order_id in cancels_due:
        add(OrderCancelled(order_id=order_id, reason="changed my mind"), f"cancel-{order_id}")

    later: dict[int, list[Event[Any]]] = defaultdict(list)
    duplicates = 0
    for index, event in enumerate(originals):
        if rng.random() < duplicate_rate:
            later[rng.randint(index + 1, len(originals))].append(event)
            duplicates += 1
    published: list[Event[Any]] = []
    boundary = 0
    for index, event in enumerate(originals):
        published.extend(later.get(index, ()))
        if index == opening:
            boundary = len(published)  # the copies so far are of opening events too
        published.append(event)
    published.extend(later.get(len(originals), ()))
    return Stream(published, len(originals), duplicates, boundary)


def compare(oracle: Oracle, inventory: dict[str, Any], orders: dict[str, Any]) -> dict[str, Any]:
    """Lost orders, wrong outcomes and wrong stock levels, with a few examples."""
    lost = sorted(
        o for o in oracle.outcomes if (orders.get(o) or {}).get("status") in (None, "pending")
    )
    wrong_orders = {
        o: {"got": orders[o], "expected": sorted(map(list, oracle.outcomes[o]), key=str)}
        for o in sorted(oracle.outcomes)
        if o not in lost and (orders[o]["status"], orders[o]["reason"]) not in oracle.outcomes[o]
    }
    unknown_orders = sorted(set(orders) - set(oracle.outcomes))
    expected = oracle.expected_inventory(orders)
    wrong_stock = {
        sku: {"got": inventory.get(sku), "expected": expected.get(sku)}
        for sku in sorted(set(expected) | set(inventory))
        if inventory.get(sku) != expected.get(sku)
    }
    return {
        "lost": len(lost),
        "wrong_outcomes": len(wrong_orders),
        "unknown_orders": len(unknown_orders),
        "double_applied": len(wrong_stock),
        "negative_on_hand": sum(1 for v in inventory.values() if v["on_hand"] < 0),
        "racy_orders": len(oracle.racy),
        "examples": {
            "lost": lost[:5],
            "wrong_outcomes": dict(list(wrong_orders.items())[:5]),
            "wrong_stock": dict(list(wrong_stock.items())[:5]),
            "unknown_orders": unknown_orders[:5],
        },
    }
