"""The demand forecast tool on series made by hand: level, trend, weekly, monthly and yearly
cycles, intermittent demand, a new product, memory that stays out of the way on plain
demand, and the numpy fallback when the library is not installed."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from agents.restock import history
from tools import forecasting
from tools.forecast import demand_forecast, spread, total
from tools.projections.restock import demand, metadata, products, purchase_orders

NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def projection(
    per_day: Callable[[datetime, random.Random], int],
    days: int,
    *,
    price: Callable[[datetime], float] = lambda day: 10.0,
    seed: int = 1,
) -> sa.Connection:
    """`days` days of demand before NOW, one order a day at its midday, as the projection
    holds it."""
    rng = random.Random(seed)
    connection = sa.create_engine("sqlite://").connect()
    metadata.create_all(connection)
    connection.execute(
        products.insert().values(
            sku="S",
            name="S",
            description="",
            category="c",
            supplier="x",
            lead_time_days=4,
            reorder_point=30,
            max_stock=100,
        )
    )
    rows = []
    for back in range(days, 0, -1):
        at = NOW - back * DAY + timedelta(hours=1)
        units = per_day(at, rng)
        if units:
            rows.append(
                {"event_id": f"o{back}", "sku": "S", "quantity": units, "at": at}
                | {"unit_price": price(at)}
            )
    if rows:
        connection.execute(demand.insert(), rows)
    return connection


def poisson(mean: float, rng: random.Random) -> int:
    return int(np.random.default_rng(rng.randrange(1 << 30)).poisson(mean))


@pytest.fixture(params=["library", "fallback"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(forecasting, "_MODELS", None)
        monkeypatch.setattr(forecasting, "_LOADED", True)
    return str(request.param)


def test_a_level_is_forecast_and_memory_changes_nothing_where_demand_has_no_structure(
    engine: str,
) -> None:
    connection = projection(lambda at, rng: poisson(6, rng), 400)
    plain = demand_forecast(connection, "S", NOW, 11)
    remembering = demand_forecast(connection, "S", NOW, 11, memory_days=730)
    assert 6 * 11 * 0.8 < total(plain.as_dict(), 11) < 6 * 11 * 1.2
    assert 0 < spread(plain.as_dict(), 11) < 6 * 11 * 0.5
    assert remembering.daily == plain.daily
    assert remembering.adjustments == ()
    assert ("fallback" in plain.engine) == (engine == "fallback")


def test_a_trend_is_followed(engine: str) -> None:
    start = NOW - 56 * DAY
    connection = projection(
        lambda at, rng: poisson(4 * 1.03 ** ((at - start).days), rng), 56, seed=3
    )
    forecast = demand_forecast(connection, "S", NOW, 10).as_dict()
    last_weeks = 4 * 1.03**52  # the level a week ago
    assert total(forecast, 10) > last_weeks * 10


# Eight weeks of a product whose demand rose by half and held there for the last week:
# a recording written from the contract alone, where AutoETS's trend (fitted to the
# lull) headed down to a third of the level while the weeks' regression rose.
RISEN_THEN_HELD = [
    5, 6, 5, 9, 5, 6, 4, 6, 2, 5, 6, 3, 5, 7, 7, 6, 5, 4, 4, 5, 5, 8, 6, 5, 4, 11, 2, 6,
    12, 9, 7, 10, 14, 8, 9, 8, 13, 6, 11, 12, 9, 11, 9, 14, 7, 18, 11, 7, 7, 7, 9, 8, 8, 9,
    7, 11,
]  # fmt: skip


def test_a_model_heading_against_the_trend_the_weeks_show_is_not_followed() -> None:
    if forecasting.engine() == "fallback":
        pytest.skip("AutoETS is the library's (the forecast extra): the fallback has none")
    assert forecasting.trending(RISEN_THEN_HELD)
    fitted = forecasting.fit(RISEN_THEN_HELD, 26)
    last_weeks = sum(RISEN_THEN_HELD[-28:]) / 28
    assert "disagreed" in fitted.method
    assert min(fitted.mean) > last_weeks * 0.9, "the forecast fell below the level"


def test_busy_weekdays_are_forecast_busier(engine: str) -> None:
    connection = projection(lambda at, rng: poisson(15 if at.weekday() >= 5 else 4, rng), 56)
    # NOW is Friday noon: day 0 holds Friday's order, days 1 and 2 the weekend's.
    forecast = demand_forecast(connection, "S", NOW, 7).as_dict()
    busy = [forecast["daily"][d] for d in (1, 2)]
    quiet = [forecast["daily"][d] for d in (0, 3, 4, 5, 6)]
    assert min(busy) > 1.5 * max(quiet)


def test_with_memory_a_monthly_rush_is_expected_at_its_days() -> None:
    """Four days a month at four times the demand; NOW (the 20th) is just before them."""
    connection = projection(
        lambda at, rng: poisson(24 if 22 <= at.day <= 25 else 6, rng), 240, seed=5
    )
    plain = demand_forecast(connection, "S", NOW, 10).as_dict()
    remembering = demand_forecast(connection, "S", NOW, 10, memory_days=730).as_dict()
    truth = 6 * 6 + 24 * 4
    assert total(remembering, 10) > total(plain, 10)
    assert abs(total(remembering, 10) - truth) < abs(total(plain, 10) - truth)
    assert any("days of the month" in note for note in remembering["adjustments"])


def test_busy_weekdays_are_no_monthly_pattern_though_they_fall_on_the_same_dates() -> None:
    """Weekends at three times the weekdays: over months some dates land on weekends again
    and again by the calendar's chance, which memory must not take for a monthly cycle."""
    for seed in range(4):
        connection = projection(
            lambda at, rng: poisson(15 if at.weekday() >= 5 else 5, rng), 240, seed=seed
        )
        plain = demand_forecast(connection, "S", NOW, 12)
        remembering = demand_forecast(connection, "S", NOW, 12, memory_days=730)
        assert remembering.adjustments == ()
        assert remembering.daily == plain.daily


def test_with_memory_a_fall_too_slow_for_eight_weeks_is_followed_over_sixteen() -> None:
    """Demand shrinking 0.5% a day: over the models' eight weeks the fall stays within the
    noise, so the forecast is the level of four weeks, which lags it; memory's sixteen weeks
    show it, and the forecast follows it down."""
    start = NOW - 112 * DAY

    def rate(at: datetime) -> float:
        return float(8 * 0.995 ** ((at - start).total_seconds() / 86400))

    truth = sum(rate(NOW + (d + 0.5) * DAY) for d in range(14))
    for seed in range(3, 8):
        connection = projection(lambda at, rng: poisson(rate(at), rng), 112, seed=seed)
        plain = demand_forecast(connection, "S", NOW, 14)
        remembering = demand_forecast(connection, "S", NOW, 14, memory_days=730)
        assert plain.method.startswith("mean of the last")
        assert "fall" in remembering.method
        off = abs(total(remembering.as_dict(), 14) - truth)
        assert off < abs(total(plain.as_dict(), 14) - truth)


def test_the_end_of_a_busy_spell_is_no_fall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six weeks at three times the demand, then ten weeks at the usual: a line through
    them slopes down, but the days scatter around it far more than counts do around one
    fall, so memory leaves the forecast to the level."""
    busy_until = NOW - 70 * DAY
    connection = projection(lambda at, rng: poisson(18 if at < busy_until else 6, rng), 112, seed=4)
    plain = demand_forecast(connection, "S", NOW, 14)
    remembering = demand_forecast(connection, "S", NOW, 14, memory_days=730)
    assert remembering.daily == plain.daily
    # What holds it back is the scatter: read as a fall, the spell's end would drag the
    # forecast under the level it has settled at.
    monkeypatch.setattr(forecasting, "STEADY", float("inf"))
    misread = demand_forecast(connection, "S", NOW, 14, memory_days=730)
    assert "fall" in misread.method
    assert total(misread.as_dict(), 14) < 0.8 * total(plain.as_dict(), 14)


def test_with_memory_last_years_season_is_expected_before_it_shows() -> None:
    season_start = NOW - 365 * DAY + 3 * DAY

    def per_day(at: datetime, rng: random.Random) -> int:
        in_season = timedelta(0) <= at - season_start < 30 * DAY
        return poisson(12 if in_season else 3, rng)

    connection = projection(per_day, 420, seed=7)
    plain = demand_forecast(connection, "S", NOW, 12).as_dict()
    remembering = demand_forecast(connection, "S", NOW, 12, memory_days=730).as_dict()
    assert total(plain, 12) < 3 * 12 * 1.5
    assert total(remembering, 12) > 2 * total(plain, 12)
    assert any("last year" in note for note in remembering["adjustments"])


def test_a_promotion_on_now_is_lifted_as_earlier_ones_were() -> None:
    """Ten-day promotions at a quarter off, every 40 days; one began three days ago."""

    def on(at: datetime) -> bool:
        return (NOW - at).days % 40 in range(0, 3) or (NOW - at).days % 40 in range(33, 40)

    connection = projection(
        lambda at, rng: poisson(20 if on(at) else 5, rng),
        200,
        price=lambda at: 7.5 if on(at) else 10.0,
    )
    remembering = demand_forecast(connection, "S", NOW, 10, memory_days=730).as_dict()
    # Seven more days at four times the rate, then three ordinary ones.
    truth = 7 * 20 + 3 * 5
    assert abs(total(remembering, 10) - truth) < 0.25 * truth
    assert any("promotion" in note for note in remembering["adjustments"])


def test_intermittent_demand_gets_its_own_method(engine: str) -> None:
    connection = projection(lambda at, rng: 4 if rng.random() < 0.15 else 0, 56, seed=11)
    forecast = demand_forecast(connection, "S", NOW, 10)
    assert "intermittent" in forecast.method
    assert ("ADIDA" in forecast.method) == (engine == "library")
    assert 0.2 < forecast.daily[0] < 1.2


def test_a_new_product_is_forecast_from_its_few_days_or_from_its_catalog_entry() -> None:
    young = projection(lambda at, rng: 9, 3)
    forecast = demand_forecast(young, "S", NOW, 10)
    assert forecast.method == "mean of 3 day(s)"
    assert forecast.daily[0] == pytest.approx(9)
    unsold = projection(lambda at, rng: 0, 0)
    prior = demand_forecast(unsold, "S", NOW, 10)
    assert prior.history_days == 0
    assert prior.daily[0] == pytest.approx(30 / 5)  # reorder point over lead time + 1


def test_lead_time_departs_from_the_catalog_only_when_three_deliveries_in_a_row_do() -> None:
    connection = projection(lambda at, rng: 5, 10)

    def delivered(days: list[float]) -> dict[str, object]:
        """Deliveries oldest first, each order placed eight days after the one before."""
        connection.execute(purchase_orders.delete())
        for n, lead in enumerate(days):
            created = NOW - (40 - 8 * n) * DAY
            connection.execute(
                purchase_orders.insert().values(
                    purchase_order_id=f"PO-{n}",
                    event_id=f"e{n}",
                    sku="S",
                    quantity=10,
                    created_at=created,
                    received_at=created + lead * DAY,
                )
            )
        return history.lead_time(connection, "S", NOW, 4)

    assert delivered([6, 6])["days"] == 4  # too few to say anything
    assert delivered([4, 4, 4, 6])["days"] == 4  # one late delivery is noise
    assert delivered([4, 6, 4, 6])["days"] == 4  # two in three are still noise
    assert delivered([4, 9, 10, 10])["days"] == 9  # a slower supplier: the least of three
    assert delivered([4, 3, 2, 3])["days"] == 3  # a faster one: the most of three
