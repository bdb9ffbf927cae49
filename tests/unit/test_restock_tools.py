"""The restock tools answer as of the trigger's time, whatever the projection holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tools import restock as tools
from tools.projections.restock import demand, metadata, purchase_orders

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def projection() -> sa.Connection:
    engine = sa.create_engine("sqlite://")
    connection = engine.connect()
    metadata.create_all(connection)
    connection.execute(
        purchase_orders.insert(),
        [
            {
                "purchase_order_id": "PO-1",
                "event_id": "e-po-1",
                "sku": "S",
                "quantity": 40,
                "created_at": T0,
                "received_at": T0 + 2 * DAY,
            }
        ],
    )
    connection.execute(
        demand.insert(),
        [
            {
                "event_id": f"o-{d}",
                "sku": "S",
                "quantity": 3,
                "at": T0 + d * DAY,
                "unit_price": 10.0,
            }
            for d in range(-10, 10)
        ],
    )
    return connection


def test_an_order_received_after_the_trigger_is_still_open_at_the_trigger() -> None:
    connection = projection()
    assert [
        po["purchase_order_id"] for po in tools.open_purchase_orders(connection, "S", T0 + DAY)
    ] == ["PO-1"]
    assert tools.open_purchase_orders(connection, "S", T0 + 3 * DAY) == []
    assert tools.open_purchase_orders(connection, "S", T0 - DAY) == []


def test_demand_and_lead_times_ignore_what_came_after() -> None:
    connection = projection()
    history = tools.demand_history(connection, "S", T0, days=7)
    assert history.total == 3 * 7  # the seven days up to the trigger, none after
    assert tools.observed_lead_times(connection, "S", T0 + DAY) == []
    assert tools.observed_lead_times(connection, "S", T0 + 3 * DAY) == [2.0]
    assert tools.demand_between(connection, "S", T0, T0 + 5 * DAY) == 15
