"""The bodies the API takes and answers, with the event catalog's own field types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from agentbus.agent import Decisions
from events.inventory import MAX_LINES
from events.types import (
    Count,
    Currency,
    Days,
    Id,
    LongText,
    Money,
    Name,
    Note,
    Quantity,
    ShortText,
    SignedStock,
    Sku,
    Stock,
)


class Body(BaseModel):
    # A field the API does not know is a client's mistake, not something to drop silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineRequest(Body):
    sku: Sku
    quantity: Quantity


class OrderRequest(Body):
    customer_id: Id
    lines: Annotated[list[LineRequest], Field(min_length=1, max_length=MAX_LINES)]
    currency: Currency
    note: Note | None = None


class OrderAccepted(BaseModel):
    order_id: str
    status: Literal["pending"]
    total: Money


# Views answer what the events said, so their amounts are plain numbers: an order
# published by another producer is shown even if its total exceeds a request's bounds.
class OrderLine(BaseModel):
    sku: str
    quantity: int
    unit_price: float


class OrderView(BaseModel):
    order_id: str
    status: Literal["pending", "confirmed", "rejected", "refunded"]
    reason: str | None
    lines: list[OrderLine]
    total: float
    currency: str


class CancelRequest(Body):
    reason: ShortText


class ProductRequest(Body):
    name: Name
    description: LongText
    category: Name
    unit_cost: Money
    unit_price: Money
    lead_time_days: Days
    reorder_point: Count
    max_stock: Quantity
    supplier: Name


class ReceiptRequest(Body):
    sku: Sku
    quantity: Quantity
    purchase_order_id: Id | None = None


class Accepted(BaseModel):
    """A write taken: the event it emitted, which leaves through the outbox."""

    event_id: str


class InventoryView(BaseModel):
    sku: str
    on_hand: Stock
    reserved: Stock
    available: SignedStock


class SuggestionView(BaseModel):
    id: str
    agent: str
    type: str
    subject: str
    status: Literal["pending", "approved", "rejected"]
    data: dict[str, Any]
    trace_id: str | None


class RejectRequest(Body):
    reason: Annotated[ShortText, Field(min_length=1)]


class Decided(BaseModel):
    id: str
    status: Literal["approved", "rejected"]
    event_id: str
    event_type: str


def approval_request(decisions: Mapping[str, Decisions]) -> type[Body]:
    """The approval body: a note, and every field some agent lets a reviewer change
    (each optional; one an agent does not allow is refused for its suggestions)."""
    fields: dict[str, Any] = {"note": (Note | None, None)}
    for declared in decisions.values():
        if declared.changes is None:
            continue
        for name, info in declared.changes.model_fields.items():
            fields.setdefault(name, (info.annotation, info))
    model: type[Body] = create_model("ApprovalRequest", __base__=Body, **fields)
    return model
