"""How a restock suggestion is decided: approved with a quantity a reviewer may change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from agentbus.agent import Decisions
from events import RestockApproved, RestockRejected
from events.types import Quantity


class RestockChanges(BaseModel):
    quantity: Quantity | None = None


def _approve(
    suggestion: Mapping[str, Any], reviewer: str, note: str | None, changes: RestockChanges
) -> RestockApproved:
    return RestockApproved(
        recommendation_id=suggestion["recommendation_id"],
        sku=suggestion["sku"],
        quantity=changes.quantity if changes.quantity is not None else suggestion["quantity"],
        reviewer=reviewer,
        note=note,
    )


def _reject(suggestion: Mapping[str, Any], reviewer: str, reason: str) -> RestockRejected:
    return RestockRejected(
        recommendation_id=suggestion["recommendation_id"],
        sku=suggestion["sku"],
        reviewer=reviewer,
        reason=reason,
    )


DECISIONS = Decisions(
    suggestion_type="restock.recommended",
    id_field="recommendation_id",
    approved=RestockApproved,
    rejected=RestockRejected,
    approve=_approve,
    reject=_reject,
    changes=RestockChanges,
)
