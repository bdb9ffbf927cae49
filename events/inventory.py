"""Reservations and stock signals."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from events.base import EventData, Part
from events.types import Count, Days, Id, Quantity, Sku


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
    lines: Annotated[list[ReservedLine], Field(min_length=1, max_length=500)]


class InventoryReservationFailed(EventData):
    event_type = "inventory.reservation_failed"
    subject_field = "order_id"

    order_id: Id
    shortages: Annotated[list[Shortage], Field(min_length=1, max_length=500)]


class InventoryReleased(EventData):
    event_type = "inventory.released"
    subject_field = "order_id"

    order_id: Id
    lines: Annotated[list[ReservedLine], Field(max_length=500)]


class InventoryLow(EventData):
    event_type = "inventory.low"
    subject_field = "sku"

    sku: Sku
    available: int
    on_hand: Count
    reserved: Count
    reorder_point: Count
    max_stock: Quantity
    lead_time_days: Days
