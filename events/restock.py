"""Restock recommendations, their review, and the purchase orders they become."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from events.base import EventData
from events.types import Confidence, Id, LongText, Name, Note, Quantity, ShortText, Sku, Urgency

__all__ = ["PurchaseOrderCreated", "RestockApproved", "RestockRecommended", "RestockRejected"]


class RestockRecommended(EventData):
    event_type = "restock.recommended"
    subject_field = "sku"

    recommendation_id: Id
    sku: Sku
    quantity: Quantity
    urgency: Urgency
    rationale: LongText
    # Ids of the events the agent relied on; none is a valid (if weak) answer.
    evidence: Annotated[list[Id], Field(max_length=200)]
    confidence: Confidence
    agent: Name
    model: Name
    prompt_version: Name
    trigger_event_id: Id


class RestockApproved(EventData):
    event_type = "restock.approved"
    subject_field = "sku"

    recommendation_id: Id
    sku: Sku
    quantity: Quantity
    reviewer: Name
    note: Note | None = None


class RestockRejected(EventData):
    event_type = "restock.rejected"
    subject_field = "sku"

    recommendation_id: Id
    sku: Sku
    reviewer: Name
    reason: ShortText


class PurchaseOrderCreated(EventData):
    event_type = "purchase_order.created"
    subject_field = "sku"

    purchase_order_id: Id
    sku: Sku
    quantity: Quantity
    supplier: Name
    recommendation_id: Id
