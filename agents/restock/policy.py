"""The offline restock policy: the floor an LLM has to beat.

Order up to the demand expected over the lead time and one review period, plus
safety stock for the demand's day-to-day variation at a 95% service level, less
what is available and already on order:

    target   = mean_daily x (lead_time + review) + z x std_daily x sqrt(lead_time)
    quantity = ceil(target - available - on_order)

It never orders past the product's max stock (the shelf). History adjusts it:
a demand trend (last week against the weeks before) scales
the mean; when reviewers rejected larger suggestions for the SKU, the quantity
stays at or below what they last approved (or well under what they rejected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.restock.proposal import RestockProposal

REVIEW_DAYS = 7
Z_95 = 1.65


def recommend(facts: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]]) -> RestockProposal:
    trigger = facts["trigger"]
    demand = facts["demand"]
    lead = max(int(trigger["lead_time_days"]), 0)
    available = int(trigger["available"])
    on_order = sum(int(po["quantity"]) for po in facts["open_purchase_orders"])
    mean = float(demand["daily_mean"])
    trend = 1.0
    if demand["previous_weeks_mean"] > 0:
        trend = min(max(demand["last_week"] / demand["previous_weeks_mean"], 0.5), 2.0)
    if mean == 0:
        # No sales seen: keep the SKU at its reorder point, no more.
        mean = max(int(trigger["reorder_point"]), 1) / max(lead + REVIEW_DAYS, 1)
    expected = mean * trend
    safety = Z_95 * float(demand["daily_std"]) * math.sqrt(max(lead, 1))
    target = expected * (lead + REVIEW_DAYS) + safety
    quantity = math.ceil(target - available - on_order)
    notes = []
    room = int(trigger["max_stock"]) - available - on_order
    if quantity > room > 0:
        notes.append(f"held to {room} so stock stays within max stock {trigger['max_stock']}")
        quantity = room
    cap = _cap_from_decisions(decisions)
    if cap is not None and quantity > cap:
        notes.append(f"held to {cap} because reviewers turned down larger orders for this SKU")
        quantity = cap
    quantity = max(quantity, 1)
    cover = available / expected if expected > 0 else float("inf")
    if cover < lead:
        urgency = "high"
    elif cover < lead + REVIEW_DAYS / 2:
        urgency = "medium"
    else:
        urgency = "low"
    confidence = round(0.35 + 0.55 * min(int(demand["days"]), 28) / 28, 2)
    rationale = (
        f"Expected demand {expected:.1f}/day (trend x{trend:.2f}) over lead time {lead}d "
        f"plus a {REVIEW_DAYS}d review period, safety stock {safety:.0f} (95% service), "
        f"less {available} available and {on_order} on order: order {quantity}. "
        f"Cover is {cover:.1f} days."
    )
    if notes:
        rationale += " " + "; ".join(notes) + "."
    evidence = [facts["trigger_id"], *demand["recent_event_ids"][:5]]
    evidence += [d["event_id"] for d in decisions[:3]]
    return RestockProposal(
        quantity=quantity,
        urgency=urgency,
        rationale=rationale,
        confidence=confidence,
        evidence=evidence,
    )


def _cap_from_decisions(decisions: Sequence[Mapping[str, Any]]) -> int | None:
    rejected = [d for d in decisions if d["status"] == "rejected" and d["suggested_quantity"]]
    if not rejected:
        return None
    approved = [d for d in decisions if d["status"] == "approved" and d["approved_quantity"]]
    if approved:
        return int(approved[0]["approved_quantity"])
    return max(1, int(min(d["suggested_quantity"] for d in rejected) * 0.6))
