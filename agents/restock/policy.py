"""The offline restock policy: the floor an LLM has to beat.

Order up to the demand expected over the lead time and one review period, plus
safety stock for the demand's day-to-day variation at a 95% service level, less
what is available and already on order:

    target   = mean_daily x (lead_time + review) + z x std_daily x sqrt(lead_time)
    quantity = ceil(target - available - on_order)

A shop that turns orders away when it is out of stock loses the sales it cannot
serve before the order arrives, so demand the stock cannot cover over the lead
time is not ordered for.

It never orders past the product's max stock (the shelf). History adjusts it:
past low-stock episodes that looked like today's (around the same date a year
ago, the same price cut, the same unusual run-up: a season, a promotion) scale
the mean by what demand did after them; a supplier slower than the
catalog says lengthens the lead time; when reviewers rejected larger
suggestions for the SKU, the quantity stays at or below what they last approved
(or well under what they rejected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.restock.proposal import RestockProposal

REVIEW_DAYS = 7
Z_95 = 1.65
Z_FLOOR = 2.0


def recommend(
    facts: Mapping[str, Any],
    decisions: Sequence[Mapping[str, Any]],
    history: Mapping[str, Any] | None = None,
) -> RestockProposal:
    trigger = facts["trigger"]
    demand = facts["demand"]
    history = history or {}
    notes = []
    lead = max(int(trigger["lead_time_days"]), 0)
    observed = list(history.get("observed_lead_days", []))[:2]
    if observed and max(observed) > lead + 0.5:
        slower = math.ceil(max(observed))
        notes.append(f"lead time taken as {slower}d, as the last deliveries took (catalog {lead}d)")
        lead = slower
    available = int(trigger["available"])
    on_order = sum(int(po["quantity"]) for po in facts["open_purchase_orders"])
    mean = float(demand["daily_mean"])
    expected = mean
    lift = _analog_lift(history)
    if lift is not None:
        factor, count = lift
        base = float(history.get("base_daily") or mean)
        expected = base * factor
        notes.append(
            f"{count} earlier low(s) like this one (season, price, run-up) saw demand at "
            f"x{factor:.2f} "
            "of the month before over the next lead time and review period"
        )
    safety = Z_95 * float(demand["daily_std"]) * math.sqrt(max(lead, 1))
    target = expected * (lead + REVIEW_DAYS) + safety
    quantity = math.ceil(target - available - on_order)
    short = expected * lead - available - on_order
    if short > 0:
        # Sold out before the order can arrive: the shop turns those customers away
        # (lost sales, no backorders), so ordering for them would only leave stock over.
        quantity = math.ceil(target - available - on_order - short)
        if short >= 0.5:  # worth a word only when it rounds to a unit or more
            notes.append(
                f"about {short:.0f} units of demand fall before the order can arrive and are "
                "not ordered for"
            )
    # inventory.low fires once per downward crossing: an order that leaves stock under
    # the reorder point when it arrives means no signal ever comes again for this SKU.
    at_arrival = max(0.0, available + on_order - expected * lead)
    # The margin is for demand running faster than expected until then: two standard
    # deviations (more than the safety stock's), since falling short here silences the
    # SKU for good.
    margin = Z_FLOOR * float(demand["daily_std"]) * math.sqrt(max(lead, 1))
    floor = math.ceil(int(trigger["reorder_point"]) + 1 + margin - at_arrival)
    if quantity < floor:
        notes.append(f"raised to {floor} so stock is back above the reorder point on arrival")
        quantity = floor
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
        f"Expected demand {expected:.1f}/day over lead time {lead}d "
        f"plus a {REVIEW_DAYS}d review period, safety stock {safety:.0f} (95% service), "
        f"less {available} available and {on_order} on order: order {quantity}. "
        + (f"Cover is {cover:.1f} days." if expected > 0 else "No demand seen yet.")
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


UNUSUAL = 1.8  # a run-up this far from the month's rate is a pattern worth recognising
PRICE_CUT = 0.95  # a price this far under the month's usual one is a promotion
PRICE_MATCH = 0.05
YEAR = 365
SEASON_MATCH = 10  # days either side of the date a year ago
MATCH = 1.5  # analogs whose run-up is within this factor of today's


def _analog_lift(history: Mapping[str, Any]) -> tuple[float, int] | None:
    analogs = list(history.get("analogs", []))
    price = float(history.get("price_ratio") or 1.0)
    run_up = float(history.get("run_up") or 0.0)
    same_season = [
        float(a["after"])
        for a in analogs
        if abs(int(a.get("days_ago", 0)) - YEAR) <= SEASON_MATCH
        and float(a.get("price_ratio", 1.0)) > PRICE_CUT
    ]
    if same_season and price > PRICE_CUT:
        # A year of history: what followed the lows around this date last year is the
        # best guide to a season, before its run-up shows.
        matches = same_season
    elif price <= PRICE_CUT:
        # A price cut: earlier lows under a cut like it say what the cut does to demand.
        matches = [
            float(a["after"])
            for a in analogs
            if abs(float(a.get("price_ratio", 1.0)) - price) <= PRICE_MATCH
        ]
    elif run_up >= UNUSUAL:
        # An unusual run-up at the usual price: a season, or a rush seen before.
        # (A lull after a peak would match the quiet before other peaks and call for
        # stock nobody needs, so only rises are matched.)
        matches = [
            float(a["after"])
            for a in analogs
            if float(a.get("price_ratio", 1.0)) > PRICE_CUT and _similar(float(a["run_up"]), run_up)
        ]
    else:
        return None  # an ordinary day: the recent rate is the better guide
    if not matches:
        return None
    matches.sort()
    median = matches[len(matches) // 2]
    return min(max(median, 0.2), 6.0), len(matches)


def _similar(a: float, b: float) -> bool:
    # Smoothed so that a run-up of zero (no sales for days) can match another.
    a, b = a + 0.1, b + 0.1
    return max(a, b) / min(a, b) <= MATCH


def _cap_from_decisions(decisions: Sequence[Mapping[str, Any]]) -> int | None:
    rejected = [d for d in decisions if d["status"] == "rejected" and d["suggested_quantity"]]
    if not rejected:
        return None
    approved = [d for d in decisions if d["status"] == "approved" and d["approved_quantity"]]
    if approved:
        return int(approved[0]["approved_quantity"])
    return max(1, int(min(d["suggested_quantity"] for d in rejected) * 0.6))
