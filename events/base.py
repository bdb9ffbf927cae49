"""The base of every event's data model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """Data of one event type; unknown extra fields are ignored (forward compatible)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    subject_field: ClassVar[str]


class Part(BaseModel):
    """A nested value inside event data (an order line, a shortage)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
