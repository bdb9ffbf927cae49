"""How a substitute suggestion is decided: accepted with one of the substitutes
suggested (the best ranked unless the reviewer picks another), or dismissed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from agentbus.agent import DecisionInvalid, Decisions
from events import SubstituteAccepted, SubstituteDismissed
from events.types import Sku


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


DECISIONS = Decisions(
    suggestion_type="substitute.suggested",
    id_field="suggestion_id",
    approved=SubstituteAccepted,
    rejected=SubstituteDismissed,
    approve=_accept,
    reject=_dismiss,
    changes=SubstituteChanges,
)
