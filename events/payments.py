"""Payment outcomes."""

from __future__ import annotations

from events.base import EventData
from events.types import Currency, Id, Money, ShortText

__all__ = ["PaymentAuthorized", "PaymentFailed"]


class PaymentAuthorized(EventData):
    event_type = "payment.authorized"
    subject_field = "order_id"

    order_id: Id
    amount: Money
    currency: Currency


class PaymentFailed(EventData):
    event_type = "payment.failed"
    subject_field = "order_id"

    order_id: Id
    amount: Money
    currency: Currency
    reason: ShortText
