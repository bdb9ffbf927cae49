"""What the model (or the policy) proposes; code checks it before it becomes an event.

Every string and list is bounded: a model that repeats itself is stopped by the
schema (servers that enforce it turn the bounds into grammar) and, failing that,
by validation here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_RATIONALE = 1000  # characters: two to four sentences with their numbers, and room
MAX_EVIDENCE = 12  # event ids: the trigger, recent demand, past decisions
MAX_ID = 64  # an event id is a UUID (36) or a producer's own id of similar size


class RestockProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(ge=1, le=1_000_000, description="Units to order; more than 0.")
    urgency: Literal["low", "medium", "high"]
    rationale: str = Field(
        max_length=MAX_RATIONALE,
        description="Why, in two to four sentences, with the numbers used.",
    )
    # The bounds are told to the model but not enforced here: grammar-constrained
    # servers (llama.cpp) cannot bound a JSON number, a small model then answers 1.2
    # or 85 twice running, and a good quantity would be thrown away for it. The guard
    # clamps it and says so in the rationale, as it does a quantity over the cap.
    confidence: float = Field(
        description="0 to 1.",
        allow_inf_nan=False,
        json_schema_extra={"minimum": 0.0, "maximum": 1.0},
    )
    evidence: list[Annotated[str, Field(max_length=MAX_ID)]] = Field(
        max_length=MAX_EVIDENCE, description="Ids of the events the proposal rests on."
    )
