"""The event catalog: one pydantic model per event type of the wire contract."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from events.base import EventData, Part
from events.inventory import (
    InventoryLow,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReservedLine,
    Shortage,
)
from events.orders import OrderCancelled, OrderConfirmed, OrderCreated, OrderLine, OrderRejected
from events.payments import PaymentAuthorized, PaymentFailed
from events.products import InventoryAdjusted, ProductUpserted, StockReceived
from events.restock import (
    PurchaseOrderCreated,
    RestockApproved,
    RestockRecommended,
    RestockRejected,
)
from events.substitutes import Substitute, SubstituteSuggested

_MODELS: tuple[type[EventData], ...] = (
    ProductUpserted,
    StockReceived,
    InventoryAdjusted,
    OrderCreated,
    OrderCancelled,
    InventoryReserved,
    InventoryReservationFailed,
    InventoryReleased,
    PaymentAuthorized,
    PaymentFailed,
    OrderConfirmed,
    OrderRejected,
    InventoryLow,
    RestockRecommended,
    RestockApproved,
    RestockRejected,
    PurchaseOrderCreated,
    SubstituteSuggested,
)


def _catalog() -> Mapping[str, type[EventData]]:
    catalog: dict[str, type[EventData]] = {}
    for model in _MODELS:
        if model.event_type in catalog:
            raise RuntimeError(f"two models claim {model.event_type!r}")
        catalog[model.event_type] = model
    return MappingProxyType(catalog)


CATALOG: Mapping[str, type[EventData]] = _catalog()

__all__ = [
    "CATALOG",
    "EventData",
    "InventoryAdjusted",
    "InventoryLow",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderCreated",
    "OrderLine",
    "OrderRejected",
    "Part",
    "PaymentAuthorized",
    "PaymentFailed",
    "ProductUpserted",
    "PurchaseOrderCreated",
    "ReservedLine",
    "RestockApproved",
    "RestockRecommended",
    "RestockRejected",
    "Shortage",
    "StockReceived",
    "Substitute",
    "SubstituteSuggested",
]
