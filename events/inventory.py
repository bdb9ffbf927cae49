"""Reservations for orders, and the low-stock signal."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from events.base import EventData, Part
from events.types import Count, Days, Id, Quantity, SignedStock, Sku, Stock

__all__ = [
    "InventoryLow",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
    "ReservedLine",
    "Shortage",
]

# As many as an order may have lines.
MAX_LINES = 500


class ReservedLine(Part):
    sku: Sku
    quantity: Quantity


class Shortage(Part):
    sku: Sku
    requested: Quantity
    available: Count


class InventoryReserved(EventData):
    event_type = "inventory.reserved"
    subject_field = "order_id"

    order_id: Id
    lines: Annotated[list[ReservedLine], Field(min_length=1, max_length=MAX_LINES)]


class InventoryReservationFailed(EventData):
    event_type = "inventory.reservation_failed"
    subject_field = "order_id"

    order_id: Id
    shortages: Annotated[list[Shortage], Field(min_length=1, max_length=MAX_LINES)]


class InventoryReleased(EventData):
    event_type = "inventory.released"
    subject_field = "order_id"

    order_id: Id
    # May be empty: what was held may already be gone when the release is decided.
    lines: Annotated[list[ReservedLine], Field(max_length=MAX_LINES)]


class InventoryLow(EventData):
    event_type = "inventory.low"
    subject_field = "sku"

    sku: Sku
    available: SignedStock
    on_hand: Stock
    reserved: Stock
    reorder_point: Count
    max_stock: Quantity
    lead_time_days: Days
