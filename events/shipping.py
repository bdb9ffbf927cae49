"""Shipment, and what a cancellation after confirmation leads to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from events.base import EventData
from events.inventory import MAX_LINES, ReservedLine
from events.types import Currency, Id, Money, ShortText

__all__ = [
    "InventoryReturned",
    "OrderCancellationRefused",
    "PaymentRefunded",
    "RefusalReason",
    "ShipmentPrepared",
]

RefusalReason = Literal["shipped"]


class ShipmentPrepared(EventData):
    event_type = "shipment.prepared"
    subject_field = "order_id"

    shipment_id: Id
    order_id: Id
    lines: Annotated[list[ReservedLine], Field(min_length=1, max_length=MAX_LINES)]


class PaymentRefunded(EventData):
    event_type = "payment.refunded"
    subject_field = "order_id"

    order_id: Id
    amount: Money
    currency: Currency
    reason: ShortText


class InventoryReturned(EventData):
    event_type = "inventory.returned"
    subject_field = "order_id"

    order_id: Id
    # May be empty, as a release may: nothing was committed for the order here.
    lines: Annotated[list[ReservedLine], Field(max_length=MAX_LINES)]


class OrderCancellationRefused(EventData):
    event_type = "order.cancellation_refused"
    subject_field = "order_id"

    order_id: Id
    reason: RefusalReason
