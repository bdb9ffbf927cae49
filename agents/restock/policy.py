"""The offline restock policy: the floor an LLM has to beat.

It orders from the demand forecast (`tools.forecast`) over the lead time plus
one review period, and weighs the two ways to be wrong as the shop does: a unit
short (a lost sale and a disappointed customer) costs three times a unit left
over (cash and shelf), and the safety stock the shop keeps for ordinary
variation is not "left over". The order brings the stock position to where
those costs balance (the newsvendor's critical ratio over the forecast's
interval):

    position = mean(lead + review) + k x sd(lead + review)
    quantity = ceil(position - available - on_order)

A shop that turns orders away when it is out of stock loses the sales it cannot
serve before the order arrives: when the forecast says the stock runs out
first, only the review period after the arrival is ordered for.

inventory.low fires once per downward crossing, so an order that leaves the
stock under the reorder point when it arrives silences the SKU: the quantity is
raised until it does not. Max stock is not a cap: it was set for the demand of
its day, and a forecast above it is said in the rationale for the reviewer.
Memory adjusts it: the lead time deliveries showed, and, when reviewers rejected
larger suggestions for the SKU, a quantity at or below the most they approved
under what they rejected (or well under what they rejected). The forecast
itself, given memory, knows seasons, monthly cycles and earlier promotions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.restock.proposal import RestockProposal
from tools.forecast import spread, total

REVIEW_DAYS = 7
SHORT_COST = 3.0  # a unit short against a unit left over
Z_95 = 1.65  # safety stock for day-to-day variation, at a 95% service level
Z_FLOOR = 2.0


def recommend(
    facts: Mapping[str, Any],
    decisions: Sequence[Mapping[str, Any]],
    history: Mapping[str, Any] | None = None,
) -> RestockProposal:
    trigger = facts["trigger"]
    forecast = facts["forecast"]
    history = history or {}
    notes: list[str] = []
    catalog = max(int(trigger["lead_time_days"]), 0)
    known = history.get("lead_time") or {}
    lead = float(known.get("days", catalog))
    if abs(lead - catalog) >= 0.5:
        notes.append(
            f"lead time taken as {lead:g}d, as {known.get('source', 'deliveries')} showed "
            f"(catalog {catalog}d)"
        )
    available = int(trigger["available"])
    on_order = sum(int(po["quantity"]) for po in facts["open_purchase_orders"])
    position = available + on_order
    horizon = lead + REVIEW_DAYS
    mean_lead, sd_lead = total(forecast, lead), spread(forecast, lead)
    mean_all, sd_all = total(forecast, horizon), spread(forecast, horizon)
    mean_review = mean_all - mean_lead
    sd_review = math.sqrt(max(sd_all**2 - sd_lead**2, 0.0))
    daily_sd = sd_all / math.sqrt(horizon)
    safety = Z_95 * daily_sd * math.sqrt(max(lead, 1.0))
    target = mean_all + critical_k(safety, sd_all) * sd_all
    quantity = math.ceil(target - position)
    short = mean_lead - position
    if short > 0:
        # Sold out before the order can arrive: those customers are turned away (lost
        # sales, no backorders), so only the review period after the arrival counts.
        after = math.ceil(mean_review + critical_k(safety, sd_review) * sd_review)
        if after < quantity:
            quantity = after
            if short >= 0.5:
                notes.append(
                    f"about {short:.0f} units of demand fall before the order can arrive and "
                    "are not ordered for"
                )
    at_arrival = max(0.0, position - mean_lead)
    # The margin is for demand running faster than forecast until then: falling short
    # here silences the SKU for good.
    floor = math.ceil(
        int(trigger["reorder_point"]) + 1 - max(0.0, position - mean_lead - Z_FLOOR * sd_lead)
    )
    if quantity < floor:
        notes.append(f"raised to {floor} so stock is back above the reorder point on arrival")
        quantity = floor
    if at_arrival + quantity > int(trigger["max_stock"]):
        # The catalog's max stock is a planning figure set for the demand of its day: the
        # forecast says more is needed, and the reviewer sees why.
        notes.append(f"more than max stock {trigger['max_stock']} on arrival, as forecast")
    cap = _cap_from_decisions(decisions)
    if cap is not None and quantity > cap:
        notes.append(f"held to {cap} because reviewers turned down larger orders for this SKU")
        quantity = cap
    quantity = max(quantity, 1)
    rate = mean_all / horizon
    cover = available / rate if rate > 0 else float("inf")
    if cover < lead:
        urgency = "high"
    elif cover < lead + REVIEW_DAYS / 2:
        urgency = "medium"
    else:
        urgency = "low"
    seen = min(int(forecast.get("history_days", 0)), 28)
    confidence = round(0.35 + 0.55 * seen / 28, 2)
    rationale = (
        f"Forecast ({forecast['method']}): {mean_all:.0f} units over lead time {lead:g}d plus "
        f"a {REVIEW_DAYS}d review (80% interval {max(0.0, mean_all - 1.28 * sd_all):.0f}-"
        f"{mean_all + 1.28 * sd_all:.0f}); {available} available and {on_order} on order: "
        f"order {quantity}. "
        + (f"Cover is {cover:.1f} days." if rate > 0 else "No demand expected.")
    )
    adjustments = [str(a) for a in forecast.get("adjustments", ())]
    if adjustments or notes:
        rationale += " " + "; ".join([*adjustments, *notes]) + "."
    evidence = [facts["trigger_id"], *facts["demand"]["recent_event_ids"][:5]]
    evidence += [d["event_id"] for d in decisions[:3]]
    return RestockProposal(
        quantity=quantity,
        urgency=urgency,
        rationale=rationale,
        confidence=confidence,
        evidence=evidence,
    )


def critical_k(free: float, sd: float) -> float:
    """Standard deviations above the mean where a unit short (SHORT_COST) balances a unit over.

    Stock up to `free` above the demand is the safety stock, not over: the cost is
    3 x P(demand > x) against P(demand < x - free), whose balance a bisection finds.
    """
    if sd <= 0:
        return 0.0
    gap = free / sd
    lo, hi = -3.0, 4.0
    for _ in range(40):
        k = (lo + hi) / 2
        if SHORT_COST * (1 - _phi(k)) > _phi(k - gap):
            lo = k
        else:
            hi = k
    return (lo + hi) / 2


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _cap_from_decisions(decisions: Sequence[Mapping[str, Any]]) -> int | None:
    rejected = [d for d in decisions if d["status"] == "rejected" and d["suggested_quantity"]]
    if not rejected:
        return None
    refused = min(int(d["suggested_quantity"]) for d in rejected)
    approved = [
        int(d["approved_quantity"])
        for d in decisions
        if d["status"] == "approved" and d["approved_quantity"]
    ]
    # The most they approved, under the least they refused: the last approval alone would
    # ratchet down, each capped order becoming the next cap.
    fits = [quantity for quantity in approved if quantity < refused]
    if fits:
        return max(fits)
    return max(1, int(refused * 0.6))
