"""Substitutes suggested for what an order could not get."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from events.base import EventData, Part
from events.types import Count, Id, LongText, Name, Note, Score, ShortText, Sku

__all__ = ["Substitute", "SubstituteAccepted", "SubstituteDismissed", "SubstituteSuggested"]


class Substitute(Part):
    sku: Sku
    name: Name
    score: Score
    available: Count


class SubstituteSuggested(EventData):
    event_type = "substitute.suggested"
    subject_field = "order_id"

    suggestion_id: Id
    order_id: Id
    sku: Sku
    # At least one: "nothing similar" is not a suggestion.
    substitutes: Annotated[list[Substitute], Field(min_length=1, max_length=50)]
    message: LongText
    agent: Name
    model: Name
    trigger_event_id: Id


class SubstituteAccepted(EventData):
    event_type = "substitute.accepted"
    subject_field = "order_id"

    suggestion_id: Id
    order_id: Id
    # The substitute chosen, one of those suggested.
    sku: Sku
    reviewer: Name
    note: Note | None = None


class SubstituteDismissed(EventData):
    event_type = "substitute.dismissed"
    subject_field = "order_id"

    suggestion_id: Id
    order_id: Id
    reviewer: Name
    reason: ShortText
