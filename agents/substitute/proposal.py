"""What the model (or the policy) answers; code checks it before it becomes an event.

Bounded like every answer schema: at most as many SKUs as are offered, each of a
SKU's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

MAX_RANKED = 3  # the agent offers at most three substitutes
MAX_SKU = 64


class SubstituteRanking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranking: list[Annotated[str, Field(max_length=MAX_SKU)]] = Field(
        max_length=MAX_RANKED, description="Candidate SKUs, best replacement first."
    )


def ranking_of(candidates: Sequence[str]) -> type[SubstituteRanking]:
    """The answer schema for these candidates: a ranking that can name only them. Servers
    that enforce the schema turn the `enum` into grammar, so even a small model cannot
    name a SKU that is not a candidate; the guard still checks."""
    sku = Annotated[str, Field(max_length=MAX_SKU, json_schema_extra={"enum": list(candidates)})]
    return create_model(
        "SubstituteRanking",
        __base__=SubstituteRanking,
        ranking=(
            list[sku],
            Field(max_length=MAX_RANKED, description="Candidate SKUs, best replacement first."),
        ),
    )
