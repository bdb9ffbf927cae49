"""Field types shared by the catalog, with the bounds CONTRACT.md states.

Bounds the contract leaves open are set here once. They protect consumers: a
hostile event cannot carry megabytes of text in one field, a million order lines,
or a number that overflows a database column.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_MONEY",
    "Confidence",
    "Count",
    "Currency",
    "Days",
    "Delta",
    "Id",
    "LongText",
    "Money",
    "Name",
    "Note",
    "Quantity",
    "RejectionReason",
    "Score",
    "ShortText",
    "SignedStock",
    "Sku",
    "Stock",
    "Urgency",
]

# Ids and keys are taken as sent: never stripped or case-folded, since they are
# compared byte for byte (dedup, subjects, joins).
Id = Annotated[str, Field(min_length=1, max_length=200)]
Sku = Annotated[str, Field(min_length=1, max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=300)]
ShortText = Annotated[str, Field(max_length=500)]
LongText = Annotated[str, Field(max_length=4000)]
Note = Annotated[str, Field(max_length=2000)]

# Integers only: 1.5, "3" and true are refused, not coerced.
Quantity = Annotated[StrictInt, Field(gt=0, le=1_000_000_000)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]
Days = Annotated[StrictInt, Field(ge=0, le=3650)]
# A stock level sums many quantities, so it gets more room than one quantity;
# 2**53 - 1 is still exact in every JSON reader. `available` is signed: an
# adjustment may take away stock that is reserved.
_MAX_STOCK_LEVEL = 2**53 - 1
Stock = Annotated[StrictInt, Field(ge=0, le=_MAX_STOCK_LEVEL)]
SignedStock = Annotated[StrictInt, Field(ge=-_MAX_STOCK_LEVEL, le=_MAX_STOCK_LEVEL)]


def _non_zero(value: int) -> int:
    if value == 0:
        raise PydanticCustomError("non_zero", "delta must not be zero")
    return value


Delta = Annotated[
    StrictInt,
    Field(ge=-1_000_000_000, le=1_000_000_000, json_schema_extra={"not": {"const": 0}}),
    AfterValidator(_non_zero),
]

# 15 significant digits survive a trip through a binary float unchanged, so with two
# places every amount up to here is exact as a JSON number in any consumer.
MAX_MONEY = Decimal("9999999999999.99")


def _not_text(value: Any) -> Any:
    # A JSON string is not a number; refusing it keeps one wire form for money.
    if isinstance(value, str | bool):
        raise PydanticCustomError("money_type", "money must be a number")
    return value


def _money_json(value: Decimal) -> float | int:
    return int(value) if value == value.to_integral_value() else float(value)


Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_MONEY, decimal_places=2, allow_inf_nan=False),
    BeforeValidator(_not_text),
    PlainSerializer(_money_json, return_type=float | int, when_used="json"),
    # No `multipleOf: 0.01`: validators test it in binary floats and refuse 19.99.
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": float(MAX_MONEY),
            "description": "A decimal amount with at most 2 decimal places.",
        }
    ),
]

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]
Confidence = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Score = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Urgency = Literal["low", "medium", "high"]
RejectionReason = Literal["out_of_stock", "payment_failed", "cancelled", "invalid"]
