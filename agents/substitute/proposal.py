"""What the model (or the policy) answers; code checks it before it becomes an event.

Bounded like every answer schema: at most as many SKUs as are offered, each of a
SKU's size.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_RANKED = 3  # the agent offers at most three substitutes
MAX_SKU = 64


class SubstituteRanking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranking: list[Annotated[str, Field(max_length=MAX_SKU)]] = Field(
        max_length=MAX_RANKED, description="Candidate SKUs, best replacement first."
    )
