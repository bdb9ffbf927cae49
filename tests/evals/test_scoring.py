"""The scorers on a stream built by hand, where every figure can be worked out on paper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agentbus.envelope import Event, new_event
from evals.gate import regressions
from evals.replay import Replayed
from evals.scoring import judge, score
from events import InventoryLow, OrderCreated, ProductUpserted, RestockRecommended

T0 = datetime(2025, 3, 3, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def order(n: int, at: datetime, quantity: int) -> Event[Any]:
    return new_event(
        OrderCreated(
            order_id=f"O-{n}",
            customer_id="C-1",
            lines=[{"sku": "P", "quantity": quantity, "unit_price": Decimal("10")}],
            currency="EUR",
        ),
        source="/test",
        time=at,
    )


def catalog_entry(at: datetime, reorder_point: int = 10, max_stock: int = 50) -> Event[Any]:
    return new_event(
        ProductUpserted(
            sku="P",
            name="P",
            description="",
            category="c",
            unit_cost=Decimal("5"),
            unit_price=Decimal("10"),
            lead_time_days=2,
            reorder_point=reorder_point,
            max_stock=max_stock,
            supplier="s",
        ),
        source="/test",
        time=at,
    )


def stream(quantity: int, *, duplicate_order: bool = False) -> Replayed:
    """Lead time 2 days; 5 available at the trigger; demand 3 + 4 before the order can
    arrive (2 of it lost), then 6 and 2 a day for a week."""
    product = catalog_entry(T0 - 10 * DAY)
    low = new_event(
        InventoryLow(
            sku="P",
            available=5,
            on_hand=5,
            reserved=0,
            reorder_point=10,
            max_stock=50,
            lead_time_days=2,
        ),
        source="/services/inventory",
        time=T0,
    )
    suggestion = new_event(
        RestockRecommended(
            recommendation_id="R-1",
            sku="P",
            quantity=quantity,
            urgency="high",
            rationale="test",
            evidence=[low.id],
            confidence=0.5,
            agent="a",
            model="policy",
            prompt_version="v1",
            trigger_event_id=low.id,
        ),
        source="/services/restock-agent",
        cause=low,
        time=T0,
    )
    orders = [
        order(1, T0 + timedelta(hours=6), 3),
        order(2, T0 + DAY, 4),
        order(3, T0 + 2 * DAY + timedelta(hours=1), 6),
        *[order(10 + d, T0 + d * DAY, 2) for d in range(3, 10)],
    ]
    if duplicate_order:
        orders.append(orders[2])  # the same event delivered twice is not more demand
    events = sorted([product, low, suggestion, *orders], key=lambda e: e.time)
    events.append(order(99, T0 + 30 * DAY, 1))  # the recording goes on past the horizon
    return Replayed(events=events)


@pytest.mark.parametrize(
    ("quantity", "short", "over", "silenced"),
    [(20, 0, 0, False), (30, 0, 6, False), (10, 10, 0, False), (9, 11, 0, True)],
)
def test_resimulation_counts_units_short_after_arrival_and_units_left_over(
    quantity: int, short: int, over: int, silenced: bool
) -> None:
    [judged] = judge(stream(quantity))
    # After arrival: 6 + 7 x 2 = 20 units asked; nothing left when it arrives (the 2 units
    # short before it are lost, not owed); safety 1.65 x std 1.33 x sqrt(2) = 3.1.
    assert judged.oracle == 24
    assert judged.lead_days == 2.0
    assert (judged.stockout_units, judged.overstock_units) == (short, over)
    assert judged.lost_sales == short * 10
    # Under the reorder point (10) once the order is in: no new signal would come.
    assert judged.silenced is silenced
    assert judged.complete
    assert judged.needed
    assert judged.in_bounds
    assert judged.evidence_valid


def test_each_suggestion_is_judged_by_the_catalog_entry_in_force_when_it_was_made() -> None:
    """The reorder point is raised to 25 the day before the suggestion, then cut to 5 with a
    shelf of 6 the day after: the suggestion answers to 25 and the old shelf of 50."""
    replayed = stream(20)
    replayed.events = sorted(
        [
            *replayed.events,
            catalog_entry(T0 - DAY, reorder_point=25),
            catalog_entry(T0 + DAY, reorder_point=5, max_stock=6),
        ],
        key=lambda e: e.time,
    )
    [judged] = judge(replayed)
    # 20 units arrive to an empty shelf: under the reorder point of the day (25), not of the
    # later entry (5); within 3 x the shelf of the day (50), not of the later one (6).
    assert judged.silenced
    assert judged.in_bounds
    figures = score(replayed, [judged])
    assert figures.silencing == 1
    assert figures.out_of_bounds == 0
    # The quantity error is relative to the larger of the oracle and the reorder point then.
    assert figures.quantity_error == round(abs(20 - judged.oracle) / max(judged.oracle, 25), 3)


def test_a_duplicated_order_is_not_counted_as_demand_twice() -> None:
    assert judge(stream(20, duplicate_order=True))[0].oracle == 24


def test_a_suggestion_whose_future_is_cut_off_is_checked_but_not_costed() -> None:
    replayed = stream(10)
    replayed.events = [e for e in replayed.events if e.time <= T0 + 5 * DAY]
    [judged] = judge(replayed)
    assert not judged.complete
    figures = score(replayed, [judged])
    assert figures.cost == 0
    assert figures.suggestions == 1
    assert figures.passed


def test_unknown_evidence_out_of_bounds_and_schema_invalid_suggestions_fail_the_checks() -> None:
    replayed = stream(20)
    n, suggestion = next(
        (n, e) for n, e in enumerate(replayed.events) if e.type == "restock.recommended"
    )
    # Built without validation, as a suggestion from a broken agent might look.
    data = RestockRecommended.model_construct(
        **{
            **dict(suggestion.data),
            "evidence": [*suggestion.data.evidence, "no-such-event"],
            "quantity": 151,  # the cap is 3 x max stock
            "confidence": 7.0,  # outside the schema's 0..1
        }
    )
    replayed.events[n] = suggestion.model_copy(update={"data": data})
    [judged] = judge(replayed)
    assert not judged.evidence_valid
    assert not judged.in_bounds
    assert not judged.valid
    figures = score(replayed, [judged])
    assert (figures.evidence_invalid, figures.out_of_bounds, figures.invalid) == (1, 1, 1)
    assert not figures.passed


def test_a_second_suggestion_for_one_trigger_is_a_duplicate() -> None:
    replayed = stream(20)
    suggestion = next(e for e in replayed.events if e.type == "restock.recommended")
    replayed.events.append(suggestion.model_copy(update={"id": "another-id"}))
    figures = score(replayed, judge(replayed))
    assert figures.duplicates == 1
    assert not figures.passed


def test_gate_flags_worse_costs_beyond_tolerance_and_any_worse_hard_check() -> None:
    def results(cost: float, duplicates: int = 0) -> dict[str, Any]:
        figures = {"cost": cost, "stockout_units": 0, "unneeded": 0, "duplicates": duplicates}
        return {"scenarios": {"s": {"contenders": {"agent": {**figures, "passed": True}}}}}

    assert regressions(results(100), results(112), 0.10) == []  # within 10% + 3 units
    assert regressions(results(100), results(114), 0.10) == [
        "s/agent: cost 100 -> 114 (tolerance 10%)"
    ]
    assert regressions(results(100), results(50, duplicates=1), 0.10) == [
        "s/agent: duplicates 0 -> 1"
    ]
