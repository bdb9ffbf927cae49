"""Field types shared by the catalog, with the bounds CONTRACT.md states.

Bounds on strings and lists also protect consumers: a hostile event cannot carry
megabytes of text in one field or a million order lines.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, StrictInt

Id = Annotated[str, Field(min_length=1, max_length=200)]
Sku = Annotated[str, Field(min_length=1, max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=300)]
ShortText = Annotated[str, Field(max_length=500)]
LongText = Annotated[str, Field(max_length=4000)]

# Integers only: 1.5, "3" and true are refused, not coerced.
Quantity = Annotated[StrictInt, Field(gt=0, le=1_000_000_000)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]
Delta = Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)]
Days = Annotated[StrictInt, Field(ge=0, le=3650)]


def _money_json(value: Decimal) -> float | int:
    # A JSON number, as the contract says; two places print back exactly.
    return int(value) if value == value.to_integral_value() else float(value)


Money = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("1000000000"), decimal_places=2, allow_inf_nan=False),
    PlainSerializer(_money_json, return_type=float | int, when_used="json"),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Urgency = Literal["low", "medium", "high"]
RejectionReason = Literal["out_of_stock", "payment_failed", "cancelled", "invalid"]
