"""The offline restock policy: the floor an LLM has to beat.

It orders the quantity with the least expected cost to the shop
(`agents.restock.outcomes`): demand over the lead time, the review period after
the arrival and the period after that comes from the demand forecast
(`tools.forecast`); a unit short weighs three units left over; stock still
under the reorder point once the order is in silences the SKU. So it orders
for the review period after the arrival (demand the stock cannot serve before
then is lost, not owed), brings the stock back above the reorder point when
that is worth it, and no more. Where memory found a surge ahead (a promotion,
paydays, a season), whose timing the forecast's spread does not capture, it
keeps the stock clear of the reorder point unless what is left lasts two more
weeks.

Max stock is the shop's declared capacity (CONTRACT.md, product.upserted): the
order never brings the stock expected on arrival above it. Memory adjusts the
decision where it has evidence: the lead time deliveries showed, seasons,
monthly cycles and promotions (in the forecast), and, when reviewers rejected
larger suggestions for the SKU, a quantity at or below the most they approved
under what they rejected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.restock.outcomes import Outcomes, Situation, Stretch
from agents.restock.proposal import RestockProposal
from tools.forecast import spread, total

REVIEW_DAYS = 7
Z_95 = 1.65  # safety stock for day-to-day variation, at a 95% service level
SILENCE_RISK = 0.02  # a chance of silencing the SKU worth weighing against more stock
SILENCE_CAP = 0.05  # ... and the most it may keep, unless the stock left lasts RUNWAY_DAYS
SILENT_DAYS = 7  # a silenced SKU goes unnoticed until the weekly review
RUNWAY_DAYS = 14
HORIZON_DAYS = REVIEW_DAYS + max(SILENT_DAYS, RUNWAY_DAYS)  # forecast beyond the lead time


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
    situation = situation_of(facts, lead, available + on_order)
    outcomes = Outcomes(situation)
    left = outcomes.on_arrival()
    # The classic order-up-to: the review period after the arrival and safety stock, less
    # what will be left then (demand the stock cannot serve before is lost, not owed).
    quantity = max(0, math.ceil(situation.review.mean + situation.safety - left))
    lost = left - (situation.position - situation.lead.mean)
    if lost >= 0.5:
        notes.append(
            f"about {lost:.0f} units of demand may fall before the order can arrive and are "
            "not ordered for"
        )
    if outcomes.silencing(quantity) > SILENCE_RISK:
        # Left under the reorder point, the SKU sends no signal again: raise the order
        # where the demand that would go unserved outweighs the stock it leaves over.
        raised = outcomes.best(at_least=quantity).quantity
        runway = total(facts["forecast"], lead + REVIEW_DAYS + RUNWAY_DAYS) - total(
            facts["forecast"], lead + REVIEW_DAYS
        )
        # Where memory found a pattern (a promotion, paydays, a season), its surge may come
        # days before the forecast puts it, which the forecast's spread does not show: the
        # stock is kept clear of the reorder point unless what is left lasts the runway.
        # On a plain level or a trend the expected cost decides alone: clearing a reorder
        # point set for other days is only overstock where demand is falling.
        if forecast.get("adjustments") and outcomes.left_after_review(raised) < runway:
            raised = max(raised, outcomes.clear_of_silence(quantity, SILENCE_CAP))
        if raised > quantity:
            if outcomes.silencing(raised) <= 0.5:
                notes.append(
                    f"raised to {raised} so the stock is back above the reorder point on arrival"
                )
            else:
                # Clearing a reorder point far above the demand would be overstock: the
                # raise is for the week a silenced SKU goes unnoticed.
                notes.append(
                    f"raised to {raised} so the stock lasts the week a SKU under its reorder "
                    "point goes unnoticed"
                )
            quantity = raised
    room = int(trigger["max_stock"]) - math.ceil(left)
    if quantity > room:
        notes.append(
            f"held to {max(room, 1)} so the stock expected on arrival stays within max stock "
            f"{trigger['max_stock']}"
        )
        quantity = room
    cap = _cap_from_decisions(decisions)
    if cap is not None and quantity > cap:
        notes.append(f"held to {cap} because reviewers turned down larger orders for this SKU")
        quantity = cap
    quantity = max(quantity, 1)
    on_arrival = left + quantity
    horizon = lead + REVIEW_DAYS
    mean_all = situation.lead.mean + situation.review.mean
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
        f"Forecast ({forecast['method']}): {situation.lead.mean:.0f} units over the lead time "
        f"{lead:g}d and {situation.review.mean:.0f} (sd {situation.review.sd:.0f}) over the "
        f"{REVIEW_DAYS}d review after it; {available} available and {on_order} on order: "
        f"order {quantity}, for about {on_arrival:.0f} in stock on arrival (reorder "
        f"point {trigger['reorder_point']}). "
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


def situation_of(facts: Mapping[str, Any], lead: float, position: float) -> Situation:
    """The stretches of demand the order answers for, from the forecast."""
    forecast = facts["forecast"]
    horizon = lead + REVIEW_DAYS
    mean_lead, sd_lead = total(forecast, lead), spread(forecast, lead)
    mean_all, sd_all = total(forecast, horizon), spread(forecast, horizon)
    mean_end, sd_end = (
        total(forecast, horizon + SILENT_DAYS),
        spread(forecast, horizon + SILENT_DAYS),
    )
    review = Stretch(mean_all - mean_lead, math.sqrt(max(sd_all**2 - sd_lead**2, 0.0)))
    after = Stretch(mean_end - mean_all, math.sqrt(max(sd_end**2 - sd_all**2, 0.0)))
    daily_sd = sd_all / math.sqrt(horizon) if horizon > 0 else 0.0
    return Situation(
        position=position,
        lead=Stretch(mean_lead, sd_lead),
        review=review,
        after=after,
        safety=Z_95 * daily_sd * math.sqrt(max(lead, 1.0)),
        reorder_point=int(facts["trigger"]["reorder_point"]),
        level_error=level_error(facts["demand"]),
    )


def level_error(history: Mapping[str, Any]) -> float:
    """How far the forecast's level may be off, relative to it: the standard error of a
    mean rate over the days seen (a few lumpy sales say little about the rate)."""
    mean, std, days = float(history["daily_mean"]), float(history["daily_std"]), history["days"]
    if mean <= 0 or days <= 0:
        return 0.0
    return min(1.0, std / (mean * math.sqrt(days)))


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
    # Between the most they approved under the least they refused and that refusal: the
    # last approval alone would ratchet down, each capped order becoming the next cap, and
    # halfway closes in on the line the reviewers draw.
    fits = [quantity for quantity in approved if quantity < refused]
    if fits:
        return max(max(fits), (max(fits) + refused) // 2)
    return max(1, int(refused * 0.6))
