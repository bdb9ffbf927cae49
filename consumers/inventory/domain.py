"""Inventory rules, with no I/O: reservations are all or nothing; low stock is a crossing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Level:
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


NO_STOCK = Level(0, 0)


@dataclass(frozen=True, slots=True)
class Shortage:
    sku: str
    requested: int
    available: int


def merge_lines(lines: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Quantities per SKU: an order may name a SKU on several lines."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


def shortages(levels: Mapping[str, Level], wanted: Mapping[str, int]) -> list[Shortage]:
    """Every line that cannot be reserved in full; empty means all can."""
    short = []
    for sku, quantity in wanted.items():
        available = max(levels.get(sku, NO_STOCK).available, 0)
        if quantity > available:
            short.append(Shortage(sku, quantity, available))
    return short


def crossed_low(before: int, after: int, reorder_point: int) -> bool:
    """`inventory.low` fires when available falls from >= reorder point to below it.

    Only a downward crossing counts, so it cannot fire again for the SKU until
    available has risen back to the reorder point or above.
    """
    return before >= reorder_point > after
