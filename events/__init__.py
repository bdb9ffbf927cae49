"""The event catalog: one pydantic model per event type of the wire contract (CONTRACT.md)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from events.base import EventData
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
from events.products import ProductUpserted
from events.restock import (
    PurchaseOrderCreated,
    RestockApproved,
    RestockRecommended,
    RestockRejected,
)
from events.shipping import (
    InventoryReturned,
    OrderCancellationRefused,
    PaymentRefunded,
    ShipmentPrepared,
)
from events.stock import InventoryAdjusted, StockReceived
from events.substitutes import (
    Substitute,
    SubstituteAccepted,
    SubstituteDismissed,
    SubstituteSuggested,
)

__all__ = [
    "CATALOG",
    "EventData",
    "InventoryAdjusted",
    "InventoryLow",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
    "InventoryReturned",
    "OrderCancellationRefused",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderCreated",
    "OrderLine",
    "OrderRejected",
    "PaymentAuthorized",
    "PaymentFailed",
    "PaymentRefunded",
    "ProductUpserted",
    "PurchaseOrderCreated",
    "ReservedLine",
    "RestockApproved",
    "RestockRecommended",
    "RestockRejected",
    "ShipmentPrepared",
    "Shortage",
    "StockReceived",
    "Substitute",
    "SubstituteAccepted",
    "SubstituteDismissed",
    "SubstituteSuggested",
]


def _catalog(*models: type[EventData]) -> Mapping[str, type[EventData]]:
    # Checked once at import, so a slip in a model fails every test, not one consumer.
    catalog: dict[str, type[EventData]] = {}
    for model in models:
        if model.event_type in catalog:
            raise RuntimeError(
                f"{model.__name__} and {catalog[model.event_type].__name__} "
                f"both claim {model.event_type!r}"
            )
        field = model.model_fields.get(model.subject_field)
        if field is None or field.annotation is not str or not field.is_required():
            raise RuntimeError(
                f"{model.__name__}: subject {model.subject_field!r} must be a required str field"
            )
        catalog[model.event_type] = model
    return MappingProxyType(catalog)


CATALOG: Mapping[str, type[EventData]] = _catalog(
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
    ShipmentPrepared,
    PaymentRefunded,
    InventoryReturned,
    OrderCancellationRefused,
    SubstituteAccepted,
    SubstituteDismissed,
)
