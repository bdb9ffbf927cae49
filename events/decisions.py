"""How each kind of suggestion is decided: the decision events a person's approval or
rejection becomes, and what a reviewer may change on approval.

The catalog holds these beside the events they name. The agent that makes a
suggestion declares them, and reviewing tools (the console, the HTTP API) decide
any suggestion through them alone, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from agentbus.decisions import DecisionInvalid, Decisions
from events.restock import RestockApproved, RestockRejected
from events.substitutes import SubstituteAccepted, SubstituteDismissed
from events.types import Quantity, Sku

__all__ = ["DECISIONS", "RESTOCK", "SUBSTITUTE"]


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


RESTOCK = Decisions(
    suggestion_type="restock.recommended",
    id_field="recommendation_id",
    approved=RestockApproved,
    rejected=RestockRejected,
    approve=_approve,
    reject=_reject,
    changes=RestockChanges,
)


class SubstituteChanges(BaseModel):
    sku: Sku | None = None


def _accept(
    suggestion: Mapping[str, Any], reviewer: str, note: str | None, changes: SubstituteChanges
) -> SubstituteAccepted:
    offered = [str(substitute["sku"]) for substitute in suggestion["substitutes"]]
    chosen = changes.sku if changes.sku is not None else offered[0]
    if chosen not in offered:
        raise DecisionInvalid(f"sku {chosen!r} is not among the substitutes suggested")
    return SubstituteAccepted(
        suggestion_id=suggestion["suggestion_id"],
        order_id=suggestion["order_id"],
        sku=chosen,
        reviewer=reviewer,
        note=note,
    )


def _dismiss(suggestion: Mapping[str, Any], reviewer: str, reason: str) -> SubstituteDismissed:
    return SubstituteDismissed(
        suggestion_id=suggestion["suggestion_id"],
        order_id=suggestion["order_id"],
        reviewer=reviewer,
        reason=reason,
    )


SUBSTITUTE = Decisions(
    suggestion_type="substitute.suggested",
    id_field="suggestion_id",
    approved=SubstituteAccepted,
    rejected=SubstituteDismissed,
    approve=_accept,
    reject=_dismiss,
    changes=SubstituteChanges,
)


# By the suggestion's event type: what reviewing tools go by.
DECISIONS: Mapping[str, Decisions] = MappingProxyType(
    {d.suggestion_type: d for d in (RESTOCK, SUBSTITUTE)}
)
