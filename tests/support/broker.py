"""What the tests over real RabbitMQ share: shop events to start from, and clean-up."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import aio_pika

from agentbus.envelope import Event, new_event
from events import InventoryLow, ProductUpserted
from tests.integration.chaos import queue_names


def product(sku: str, *, reorder_point: int = 20) -> Event[Any]:
    """A product with a reorder point (20 unless told) and room for 100."""
    return new_event(
        ProductUpserted(
            sku=sku,
            name=f"Kettle {sku}",
            description="A kettle.",
            category="kitchen",
            unit_cost=Decimal("5"),
            unit_price=Decimal("10"),
            lead_time_days=3,
            reorder_point=reorder_point,
            max_stock=100,
            supplier="acme",
        ),
        source="/test",
    )


def low(sku: str) -> Event[Any]:
    """That product fallen to 12, under its reorder point."""
    return new_event(
        InventoryLow(
            sku=sku,
            available=12,
            on_hand=12,
            reserved=0,
            reorder_point=20,
            max_stock=100,
            lead_time_days=3,
        ),
        source="/services/inventory",
    )


async def delete_queues(amqp_url: str, owners: Sequence[str]) -> None:
    """Delete each owner's queue and its retry and dead-letter queues."""
    names = [n for n in await queue_names() if any(n == o or n.startswith(f"{o}.") for o in owners)]
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
