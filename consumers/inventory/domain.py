"""Inventory rules, with no I/O.

`Inventory` holds the part of the inventory that one batch of events touches: it
is loaded in a few queries, changed in memory event by event, and saved in a few
more, which is what lets a batch of hundreds of events cost a handful of round
trips. Reservations are all or nothing; a low-stock signal is a downward crossing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agentbus.errors import PermanentError


@dataclass(slots=True)
class Level:
    on_hand: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    supplier: str
    reorder_point: int
    max_stock: int
    lead_time_days: int


@dataclass(slots=True)
class Reservation:
    """held -> committed (-> returned) | released; `failed` (short) and `refused`
    (rejected first) are final."""

    order_id: str
    status: str
    lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Shortage:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True, slots=True)
class LowStock:
    sku: str
    level: Level
    product: Product


def merge_lines(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Quantities per SKU: an order may name a SKU on several lines."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


def crossed_low(before: int, after: int, reorder_point: int) -> bool:
    """Available fell from >= reorder point to below it.

    Only a downward crossing counts, so the signal cannot repeat for a SKU until
    available has risen back to the reorder point or above.
    """
    return before >= reorder_point > after


class NegativeStock(PermanentError):
    code = "negative_stock"


@dataclass
class Inventory:
    products: dict[str, Product] = field(default_factory=dict)
    levels: dict[str, Level] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    changed_products: set[str] = field(default_factory=set)
    changed_levels: set[str] = field(default_factory=set)
    changed_reservations: set[str] = field(default_factory=set)

    def level(self, sku: str) -> Level:
        # An unknown SKU has no stock.
        return self.levels.setdefault(sku, Level())

    def upsert_product(self, product: Product) -> None:
        self.products[product.sku] = product
        self.changed_products.add(product.sku)

    def change_on_hand(self, sku: str, delta: int) -> LowStock | None:
        """Stock in or out. What is reserved counts as gone already: those goods
        leave when their orders are confirmed, so an adjustment may take only what
        is available, or on_hand would go below zero at the commit. (This also makes
        the outcome independent of when the commits arrive.)"""
        level = self.level(sku)
        if level.available + delta < 0:
            raise NegativeStock(
                f"{sku}: on_hand {level.on_hand} with {level.reserved} reserved cannot take "
                f"{delta:+d} without going below zero"
            )
        before = level.available
        level.on_hand += delta
        self.changed_levels.add(sku)
        return self._low(sku, before)

    def reserve(
        self, order_id: str, lines: Sequence[tuple[str, int]]
    ) -> tuple[dict[str, int], list[Shortage], list[LowStock]] | None:
        """All lines or none. None when the order was already seen (or refused)."""
        if order_id in self.reservations:
            return None
        wanted = merge_lines(lines)
        short = [
            Shortage(sku, quantity, max(self.level(sku).available, 0))
            for sku, quantity in wanted.items()
            if quantity > self.level(sku).available
        ]
        self.changed_reservations.add(order_id)
        if short:
            self.reservations[order_id] = Reservation(order_id, "failed")
            return wanted, short, []
        lows = []
        for sku, quantity in wanted.items():
            level = self.level(sku)
            before = level.available
            level.reserved += quantity
            self.changed_levels.add(sku)
            low = self._low(sku, before)
            if low is not None:
                lows.append(low)
        self.reservations[order_id] = Reservation(order_id, "held", wanted)
        return wanted, [], lows

    def commit(self, order_id: str) -> bool:
        """The goods leave: on_hand and reserved drop together; available does not move."""
        reservation = self.reservations.get(order_id)
        if reservation is None or reservation.status != "held":
            return False
        for sku, quantity in reservation.lines.items():
            level = self.level(sku)
            level.on_hand = max(level.on_hand - quantity, 0)
            level.reserved -= quantity
            self.changed_levels.add(sku)
        reservation.status = "committed"
        self.changed_reservations.add(order_id)
        return True

    def release(self, order_id: str) -> dict[str, int] | None:
        """Held stock returns to available; an order never seen is refused for good."""
        reservation = self.reservations.get(order_id)
        if reservation is None:
            self.reservations[order_id] = Reservation(order_id, "refused")
            self.changed_reservations.add(order_id)
            return None
        if reservation.status != "held":
            return None
        for sku, quantity in reservation.lines.items():
            self.level(sku).reserved -= quantity
            self.changed_levels.add(sku)
        reservation.status = "released"
        self.changed_reservations.add(order_id)
        return dict(reservation.lines)

    def take_back(self, order_id: str) -> dict[str, int] | None:
        """Committed goods return to on_hand, once; None when nothing was committed."""
        reservation = self.reservations.get(order_id)
        if reservation is None or reservation.status != "committed":
            return None
        for sku, quantity in reservation.lines.items():
            self.level(sku).on_hand += quantity
            self.changed_levels.add(sku)
        reservation.status = "returned"
        self.changed_reservations.add(order_id)
        return dict(reservation.lines)

    def refuse_if_unseen(self, order_id: str) -> None:
        """A cancellation that overtook its order: never reserve for it."""
        if order_id not in self.reservations:
            self.reservations[order_id] = Reservation(order_id, "refused")
            self.changed_reservations.add(order_id)

    def _low(self, sku: str, before: int) -> LowStock | None:
        product = self.products.get(sku)
        level = self.level(sku)
        if product is None or not crossed_low(before, level.available, product.reorder_point):
            return None
        return LowStock(sku, Level(level.on_hand, level.reserved), product)
