"""A small catalog for the platform's own tests: the platform is domain-free."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentbus.envelope import Event, new_event


class Sample(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    event_type: ClassVar[str] = "sample.happened"
    subject_field: ClassVar[str] = "key"

    key: str = Field(min_length=1)
    seq: int = Field(ge=0, strict=True)


def sample_type(name: str) -> type[Sample]:
    return type(name.replace(".", "_"), (Sample,), {"event_type": name})


TYPES = [
    "order.created",
    "order.cancelled",
    "inventory.low",
    "inventory.stock.received",
    "stock.received",
]
MODELS: dict[str, type[Sample]] = {name: sample_type(name) for name in TYPES}
CATALOG: dict[str, type[BaseModel]] = dict(MODELS)


def sample(event_type: str, key: str, seq: int) -> Event[Any]:
    return new_event(MODELS[event_type](key=key, seq=seq), source="/tests")
