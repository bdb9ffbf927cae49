"""What the model (or the policy) answers; code checks it before it becomes an event."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SubstituteRanking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranking: list[str] = Field(description="Candidate SKUs, best replacement first.")
