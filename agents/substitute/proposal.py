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
    """The answer schema for these candidates: a ranking of one to three of them and
    nothing else. Whether anything is similar enough was decided before the model is
    asked (by similarity, in code); servers that enforce the schema turn the `enum`
    into grammar, so even a small model cannot name a SKU that is not a candidate (or
    none: SmolLM2 answered an empty list every time). The guard still checks."""
    sku = Annotated[str, Field(max_length=MAX_SKU, json_schema_extra={"enum": list(candidates)})]
    return create_model(
        "SubstituteRanking",
        __base__=SubstituteRanking,
        ranking=(
            list[sku],
            Field(
                min_length=1,
                max_length=MAX_RANKED,
                description="Candidate SKUs, best replacement first.",
            ),
        ),
    )
