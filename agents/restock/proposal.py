"""What the model (or the policy) proposes; code checks it before it becomes an event."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RestockProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(description="Units to order; more than 0.")
    urgency: Literal["low", "medium", "high"]
    rationale: str = Field(description="Why, in two to four sentences, with the numbers used.")
    confidence: float = Field(description="0 to 1.")
    evidence: list[str] = Field(description="Ids of the events the proposal rests on.")
