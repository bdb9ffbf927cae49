"""No overselling: two inventory processes compete for one queue and one SKU.

200 orders of one unit (and re-sent copies of some) for a SKU with 25 in stock,
consumed by TWO `agentbus run inventory` processes (plus orders and payments),
one of which is SIGKILLed halfway. Exactly 25 orders are confirmed, the other 175
are rejected out_of_stock, and the stock ends at on_hand 0, reserved 0: no unit
sold twice, none lost, whichever process reserved it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentbus.envelope import Event, EventCodec, new_event
from agentbus.store import open_database
from events import CATALOG, OrderCreated, OrderLine, ProductUpserted, StockReceived
from tests.integration.chaos import (
    Shop,
    create_database,
    drop_database,
    exclusive_queues,
    settle,
)

SKU = "HOT-001"
STOCK = 25
ORDERS = 200


def catalog() -> list[Event[Any]]:
    return [
        new_event(
            ProductUpserted(
                sku=SKU,
                name="The one everybody wants",
                description="",
                category="hot",
                unit_cost=Decimal("5.00"),
                unit_price=Decimal("10.00"),
                lead_time_days=3,
                reorder_point=5,
                max_stock=100,
                supplier="s",
            ),
            source="/tests/oversell",
            id=f"product-{SKU}",
        ),
        new_event(
            StockReceived(sku=SKU, quantity=STOCK), source="/tests/oversell", id=f"stock-{SKU}"
        ),
    ]


def orders_with_duplicates(seed: int) -> tuple[list[Event[Any]], list[str]]:
    rng = random.Random(seed)
    orders = [
        new_event(
            OrderCreated(
                order_id=f"RUSH-{n:03d}",
                customer_id=f"C-{n:03d}",
                lines=[OrderLine(sku=SKU, quantity=1, unit_price=Decimal("10.00"))],
                currency="EUR",
            ),
            source="/tests/oversell",
            id=f"created-RUSH-{n:03d}",
        )
        for n in range(ORDERS)
    ]
    stream = list(orders)
    for event in rng.sample(orders, k=ORDERS // 10):
        # Re-sent later: the copy may well reach the other process.
        after = stream.index(event)
        stream.insert(rng.randint(after + 1, len(stream)), event)
    return stream, [e.data.order_id for e in orders]


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        await asyncio.sleep(0.5)


async def oversell(shop: Shop) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    async with exclusive_queues():
        try:
            await shop.prepare()
            # Both replicas start together, as a deployment would start them.
            first, second, *_ = await asyncio.gather(
                shop.spawn("inventory", "inventory#1"),
                shop.spawn("inventory", "inventory#2"),
                shop.spawn("orders"),
                shop.spawn("payments"),
            )
            counts = await shop.counts()
            assert counts["inventory"][1] == 2, counts  # two competing consumers
            stream, order_ids = orders_with_duplicates(seed=5)
            async with shop.publisher() as bus, shop.reader() as reader:
                await bus.publish_many(catalog())

                async def stocked() -> bool:
                    level = (await reader.read("inventory")).get(SKU) or {}
                    return level.get("on_hand") == STOCK

                await wait_for(stocked, 120, "the opening stock was not applied")
                half = len(stream) // 2
                await bus.publish_many(stream[:half])
                await first.kill()  # its unacked deliveries go to the other one
                await bus.publish_many(stream[half:])
            settled = await settle(shop, order_ids, timeout=300)
            inventory = await shop.state("inventory")
            orders = await shop.state("orders")
            codes = await shop.stop_all()
            assert codes[second.label] == 0, (codes, second.stderr())
            return inventory, orders, settled
        finally:
            await shop.dispose()


def check(inventory: dict[str, Any], orders: dict[str, Any], settled: dict[str, Any]) -> None:
    assert settled["pending_when_settled"] == 0, settled
    assert len(orders) == ORDERS, len(orders)
    confirmed = [o for o, v in orders.items() if v["status"] == "confirmed"]
    short = [o for o, v in orders.items() if v == {"status": "rejected", "reason": "out_of_stock"}]
    assert len(confirmed) <= STOCK, len(confirmed)
    assert len(confirmed) + len(short) == ORDERS, orders
    # Nothing is ever released here, so every unit goes to exactly one order.
    assert len(confirmed) == STOCK, len(confirmed)
    assert inventory[SKU] == {"on_hand": 0, "reserved": 0, "available": 0}, inventory


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_two_inventories_never_oversell_on_postgres(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    check(*await oversell(Shop(amqp_url, tmp_path / "data", database_url)))


@pytest.mark.rabbitmq
async def test_two_inventories_never_oversell_on_one_sqlite_file(
    amqp_url: str, tmp_path: Path
) -> None:
    check(*await oversell(Shop(amqp_url, tmp_path / "data")))


@pytest.mark.postgres
async def test_replicas_starting_together_on_a_fresh_postgres_database_both_migrate(
    database_url: str, tmp_path: Path
) -> None:
    name = f"agentbus_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    engine = sa.create_engine("postgresql+psycopg://" + url.partition("://")[2])
    try:
        with engine.connect() as other_replica:
            # Another replica is in the middle of creating the service's schema...
            other_replica.execute(sa.text('CREATE SCHEMA IF NOT EXISTS "inventory"'))
            database = open_database("inventory", EventCodec(CATALOG), url=url, data_dir=tmp_path)
            try:
                migrating = asyncio.create_task(database.migrate())
                await asyncio.sleep(1.0)
                assert not migrating.done()  # ...so this one waits for it,
                other_replica.commit()  # and must carry on once it is done.
                await asyncio.wait_for(migrating, 60)
            finally:
                await database.close()
    finally:
        engine.dispose()
        await drop_database(database_url, name)
