"""The restock policy's decisions on facts made by hand, where each can be worked out."""

from __future__ import annotations

import math
from typing import Any

from agents.restock import policy
from agents.restock.outcomes import Outcomes, Situation, Stretch


def facts(
    *,
    available: int,
    rate: float,
    lead: int = 4,
    reorder_point: int = 20,
    max_stock: int = 200,
    sd: float | None = None,
    on_order: int = 0,
) -> dict[str, Any]:
    """A level of `rate` units a day (Poisson's spread unless `sd`), four weeks seen."""
    daily_sd = math.sqrt(rate) if sd is None else sd
    return {
        "trigger_id": "low-1",
        "trigger": {
            "sku": "S",
            "available": available,
            "on_hand": available,
            "reserved": 0,
            "reorder_point": reorder_point,
            "max_stock": max_stock,
            "lead_time_days": lead,
        },
        "product": None,
        "demand": {
            "days": 28,
            "total": round(rate * 28),
            "daily_mean": rate,
            "daily_std": daily_sd,
            "days_with_sales": 28,
            "recent_event_ids": ["o-1", "o-2"],
            "last_week": round(rate * 7),
            "previous_weeks_mean": rate * 7,
        },
        "open_purchase_orders": (
            [{"purchase_order_id": "PO-1", "quantity": on_order, "event_id": "po-1"}]
            if on_order
            else []
        ),
        "forecast": {
            "method": "mean of the last 28 days",
            "engine": "test",
            "history_days": 28,
            "daily": [rate] * 40,
            "daily_sd": [daily_sd] * 40,
            "adjustments": [],
        },
    }


def textbook(f: dict[str, Any]) -> int:
    """The reorder-point formula the eval compares against, on the same facts."""
    trigger, demand = f["trigger"], f["demand"]
    lead = max(int(trigger["lead_time_days"]), 1)
    on_order = sum(po["quantity"] for po in f["open_purchase_orders"])
    target = demand["daily_mean"] * (lead + 7) + 1.65 * demand["daily_std"] * math.sqrt(lead)
    return max(1, math.ceil(target - trigger["available"] - on_order))


def test_on_a_plain_level_with_stock_to_spare_it_orders_what_the_textbook_does() -> None:
    for rate, available in ((5.0, 40), (12.0, 90), (2.0, 30)):
        f = facts(available=available, rate=rate, reorder_point=10)
        assert policy.recommend(f, []).quantity == textbook(f)


def test_demand_the_stock_cannot_serve_before_the_arrival_is_not_ordered_for() -> None:
    f = facts(available=5, rate=10.0, reorder_point=5)  # 40 asked over the lead time, 5 on hand
    proposal = policy.recommend(f, [])
    # The review period's 70 and its safety stock, not the 35 turned away before.
    assert 70 <= proposal.quantity < textbook(f) - 25
    assert "not ordered for" in proposal.rationale


def test_an_order_that_would_leave_the_stock_under_the_reorder_point_is_raised() -> None:
    # The review period needs little, but the reorder point is high: the plain order would
    # leave the SKU under it on arrival, and no signal would come again.
    f = facts(available=30, rate=3.0, reorder_point=30)
    base = math.ceil(3 * 7 + 1.65 * math.sqrt(3) * 2 - (30 - 12))
    proposal = policy.recommend(f, [])
    assert proposal.quantity > base
    outcomes = Outcomes(policy.situation_of(f, 4, 30))
    assert outcomes.silencing(base) > 0.5
    assert outcomes.silencing(proposal.quantity) < 0.5
    assert "back above the reorder point" in proposal.rationale


def test_a_reorder_point_far_above_the_demand_is_not_bought_back_for_its_own_sake() -> None:
    # Stock that lasts the review and the unnoticed week after it: clearing a reorder
    # point set for other days would be overstock only.
    lasting = facts(available=59, rate=3.0, reorder_point=60)
    assert policy.recommend(lasting, []).quantity == textbook(lasting)
    # Stock that does not: raised for that week, and the note says so, not that the
    # reorder point is cleared.
    short = facts(available=30, rate=3.0, reorder_point=60)
    proposal = policy.recommend(short, [])
    assert proposal.quantity > textbook(short)
    assert Outcomes(policy.situation_of(short, 4, 30)).silencing(proposal.quantity) > 0.5
    assert "goes unnoticed" in proposal.rationale


def test_max_stock_is_a_ceiling_on_the_stock_expected_on_arrival() -> None:
    f = facts(available=30, rate=20.0, reorder_point=25, max_stock=120)
    proposal = policy.recommend(f, [])
    left = Outcomes(policy.situation_of(f, 4, 30)).on_arrival()
    assert proposal.quantity == 120 - math.ceil(left)
    assert "within max stock 120" in proposal.rationale
    roomy = policy.recommend(facts(available=30, rate=20.0, reorder_point=25), [])
    assert roomy.quantity > proposal.quantity


def test_a_learned_lead_time_orders_for_the_longer_wait() -> None:
    f = facts(available=60, rate=5.0, reorder_point=20, lead=3)
    catalog = policy.recommend(f, []).quantity
    slower = policy.recommend(f, [], {"lead_time": {"days": 9.0, "source": "3 deliveries"}})
    assert slower.quantity > catalog + 20
    assert "lead time taken as 9d" in slower.rationale


def decided(status: str, suggested: int, approved: int | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "suggested_quantity": suggested,
        "approved_quantity": approved,
        "reason": "",
        "event_id": f"d-{status}-{suggested}",
    }


def test_reviewers_refusals_cap_the_order_and_the_cap_closes_in_on_their_line() -> None:
    f = facts(available=20, rate=8.0, reorder_point=20)
    free = policy.recommend(f, []).quantity
    assert free > 60
    # Refused 80: well under it.
    assert policy.recommend(f, [decided("rejected", 80)]).quantity == 48
    # Approved 30 after refusing 50: halfway, not stuck at the last approval.
    history = [decided("approved", 30, 30), decided("rejected", 50)]
    assert policy.recommend(f, history).quantity == 40
    # Approved 40 then: 45, and so on towards the line, never ratcheting down.
    history = [decided("approved", 40, 40), *history]
    assert policy.recommend(f, history).quantity == 45


def test_the_same_facts_give_the_same_order() -> None:
    f = facts(available=59, rate=3.0, reorder_point=60)
    assert {policy.recommend(f, []).quantity for _ in range(5)} == {
        policy.recommend(f, []).quantity
    }


def test_expected_costs_weigh_a_unit_short_three_times_a_unit_over() -> None:
    """No reorder point, no safety stock: the newsvendor's 75% quantile of the review period."""
    situation = Situation(
        position=0.0,
        lead=Stretch(0.0, 0.0),
        review=Stretch(100.0, 20.0),
        after=Stretch(100.0, 20.0),
        safety=0.0,
        reorder_point=0,
        level_error=0.0,
    )
    best = Outcomes(situation).best().quantity
    assert 108 <= best <= 118  # 100 + 0.67 x 20, give or take the gamma's skew and the draws
