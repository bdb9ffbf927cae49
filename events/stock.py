"""Stock movements: goods received and manual adjustments of what is on hand."""

from __future__ import annotations

from events.base import EventData
from events.types import Delta, Id, Quantity, ShortText, Sku

__all__ = ["InventoryAdjusted", "StockReceived"]


class StockReceived(EventData):
    event_type = "stock.received"
    subject_field = "sku"

    sku: Sku
    quantity: Quantity
    purchase_order_id: Id | None = None


class InventoryAdjusted(EventData):
    event_type = "inventory.adjusted"
    subject_field = "sku"

    sku: Sku
    delta: Delta
    reason: ShortText
