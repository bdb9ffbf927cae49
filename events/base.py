"""The base of every event's data model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["EventData", "Part"]


class EventData(BaseModel):
    """The `data` of one event type; unknown extra fields are ignored (forward compatible)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    """The CloudEvents `type`, also the routing key."""
    subject_field: ClassVar[str]
    """The data field whose value is the event's `subject` (the per-key ordering key)."""


class Part(BaseModel):
    """A value nested in event data (an order line, a shortage), as forward compatible."""

    model_config = ConfigDict(extra="ignore", frozen=True)
