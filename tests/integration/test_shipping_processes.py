"""`agentbus run shipping` as a process beside inventory, orders and payments.

Over RabbitMQ, with the handling delay set by `AGENTBUS_SHIPPING_DELAY_S`: an order
cancelled inside the delay is refunded and its stock returned, an order left alone is
prepared for shipment once the delay has passed, and its later cancellation is
refused. Every service ends its run with exit 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentbus.envelope import Event, EventCodec, new_event
from agentbus.transport.base import Delivery, QueueSpec
from agentbus.transport.rabbitmq import RabbitTransport
from events import CATALOG, OrderCancelled, OrderCreated, OrderLine, StockReceived
from tests.integration.chaos import ServiceProcess, Shop, exclusive_queues
from tests.support.broker import delete_queues

pytestmark = pytest.mark.rabbitmq
DELAY_S = 8  # room for the cancellation to be refunded inside it on a busy machine
SOURCE = "/tests/shipping"


def order(order_id: str, quantity: int) -> Event[Any]:
    return new_event(
        OrderCreated(
            order_id=order_id,
            customer_id="c-1",
            lines=[OrderLine(sku="SHIP-1", quantity=quantity, unit_price=Decimal("12.50"))],
            currency="EUR",
        ),
        source=SOURCE,
        id=f"created-{order_id}",
    )


def cancel(order_id: str) -> Event[Any]:
    return new_event(
        OrderCancelled(order_id=order_id, reason="changed my mind"),
        source=SOURCE,
        id=f"cancelled-{order_id}",
    )


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(0.3)


async def test_shipping_runs_as_a_process_with_its_delay(amqp_url: str, tmp_path: Path) -> None:
    shop = Shop(amqp_url, tmp_path / "data")
    owners = ("shipping",)  # the chaos helpers clean the others' queues
    tap = f"test.shipping.{uuid.uuid4().hex[:10]}"
    seen: list[Event[Any]] = []
    codec = EventCodec(CATALOG)

    async def keep(delivery: Delivery) -> None:
        seen.append(codec.decode(delivery.message.body))
        await delivery.ack()

    async with exclusive_queues():
        await delete_queues(amqp_url, owners)
        observer = RabbitTransport(amqp_url, exchange=shop.exchange, connection_name="tap")
        try:
            await shop.prepare()
            await observer.start()
            await observer.declare(
                [QueueSpec(tap, bindings=("#",), kind="classic", transient=True)]
            )
            await observer.consume(tap, keep, prefetch=256)
            env = shop.env() | {"AGENTBUS_SHIPPING_DELAY_S": str(DELAY_S)}
            processes = [ServiceProcess(s, env) for s in ("inventory", "orders", "payments")]
            processes.append(ServiceProcess("shipping", env))
            shop.processes.extend(processes)
            await asyncio.gather(*(p.start() for p in processes))

            def of(event_type: str, subject: str) -> list[Event[Any]]:
                return [e for e in seen if e.type == event_type and e.subject == subject]

            async with shop.publisher() as bus:
                stock = StockReceived(sku="SHIP-1", quantity=10, purchase_order_id=None)
                await bus.publish_many([new_event(stock, source=SOURCE, id="stock-SHIP-1")])
                await bus.publish_many([order("o-stays", 3), order("o-cancelled", 2)])

                async def confirmed() -> bool:
                    return bool(of("order.confirmed", "o-cancelled"))

                await wait_for(confirmed, 60, "o-cancelled was not confirmed")
                await bus.publish_many([cancel("o-cancelled")])

                async def refunded() -> bool:
                    return bool(of("inventory.returned", "o-cancelled"))

                await wait_for(refunded, 60, "o-cancelled was not refunded")
                assert of("shipment.prepared", "o-cancelled") == []
                assert of("shipment.prepared", "o-stays") == [], "not before its delay"

                async def shipped() -> bool:
                    return bool(of("shipment.prepared", "o-stays"))

                started = time.monotonic()
                await wait_for(shipped, 60, "o-stays was not prepared for shipment")
                await bus.publish_many([cancel("o-stays"), cancel("o-stays")])

                async def refused() -> bool:
                    return bool(of("order.cancellation_refused", "o-stays"))

                await wait_for(refused, 60, "the late cancellation was not refused")

            assert time.monotonic() - started < DELAY_S + 30
            [refund] = of("payment.refunded", "o-cancelled")
            assert (refund.data.amount, refund.data.currency) == (Decimal("25.00"), "EUR")
            assert [line.quantity for line in of("shipment.prepared", "o-stays")[0].data.lines] == [
                3
            ]
            assert len(of("order.cancellation_refused", "o-stays")) == 1
            assert of("payment.refunded", "o-stays") == []
            orders = await shop.state("orders")
            assert orders["o-cancelled"] == {"status": "refunded", "reason": "cancelled"}
            assert orders["o-stays"] == {"status": "confirmed", "reason": None}
            assert (await shop.state("inventory"))["SHIP-1"] == {
                "on_hand": 7,
                "reserved": 0,
                "available": 7,
            }
            shipping = await shop.state("shipping")
            assert shipping["o-stays"]["status"] == "prepared"
            assert shipping["o-cancelled"]["status"] == "refunded"
            codes = await shop.stop_all()
            assert set(codes.values()) == {0}, codes
        finally:
            await observer.close()
            await shop.dispose()
            await delete_queues(amqp_url, owners)
