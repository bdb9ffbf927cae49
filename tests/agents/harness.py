"""An in-process shop for agent tests: real services on the in-process broker and SQLite."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.host import Host
from agentbus.service import Service
from agentbus.settings import Settings
from agentbus.transport.base import Delivery, QueueSpec
from agentbus.transport.memory import InMemoryBroker
from events import CATALOG, InventoryLow, OrderCreated, ProductUpserted

START = datetime(2026, 11, 2, 9, tzinfo=UTC)


class Shop:
    def __init__(self, data_dir: Path, services: Sequence[Service]) -> None:
        base = Settings.from_env({"AGENTBUS_RETRY_DELAY": "0.2"})
        self.settings = dataclasses.replace(
            base,
            data_dir=data_dir,
            database_url=None,
            consumer=dataclasses.replace(base.consumer, event_time="cause"),
        )
        self.transport = InMemoryBroker().connect()
        self.bus = Bus(self.transport, EventCodec(CATALOG))
        self.host = Host(self.bus, services, self.settings)
        self.seen: list[Event[Any]] = []

    async def __aenter__(self) -> Shop:
        await self.transport.start()
        await self.transport.declare([QueueSpec("test.observer", bindings=("#",), transient=True)])

        async def observe(delivery: Delivery) -> None:
            self.seen.append(self.bus.codec.decode(delivery.message.body))
            await delivery.ack()

        await self.transport.consume("test.observer", observe, prefetch=1000)
        await self.host.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.host.stop()
        await self.transport.close()

    async def publish(self, events: Sequence[Event[Any]]) -> None:
        await self.bus.publish_many(events)
        await self.host.settle(interval=0.02, stable=3, timeout=60)

    def of_type(self, event_type: str) -> list[Event[Any]]:
        return [e for e in self.seen if e.type == event_type]


def product(sku: str, *, max_stock: int = 40, description: str = "A fine thing.") -> Event[Any]:
    return new_event(
        ProductUpserted(
            sku=sku,
            name=f"Product {sku}",
            description=description,
            category="kitchen",
            unit_cost=5,
            unit_price=9.5,
            lead_time_days=3,
            reorder_point=10,
            max_stock=max_stock,
            supplier="acme",
        ),
        source="/tests",
        id=f"product-{sku}",
        time=START,
    )


def order(order_id: str, sku: str, quantity: int, day: int, note: str | None = None) -> Event[Any]:
    return new_event(
        OrderCreated(
            order_id=order_id,
            customer_id="c-1",
            currency="EUR",
            note=note,
            lines=[{"sku": sku, "quantity": quantity, "unit_price": 9.5}],
        ),
        source="/tests",
        id=f"order-{order_id}",
        time=START + timedelta(days=day),
    )


def low(sku: str, n: int, *, day: int = 10, max_stock: int = 40) -> Event[Any]:
    return new_event(
        InventoryLow(
            sku=sku,
            available=4,
            on_hand=6,
            reserved=2,
            reorder_point=10,
            max_stock=max_stock,
            lead_time_days=3,
        ),
        source="/tests",
        id=f"low-{sku}-{n}",
        time=START + timedelta(days=day, minutes=n),
    )
