"""Shipping, refunds and refusals over a real RabbitMQ, with redeliveries.

The same services as the in-process domain tests (`tests/e2e/shop.py`), their
deliveries, confirms and redeliveries going through the broker; queues and exchange
are this run's own and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.contract.harness import RabbitHarness
from tests.e2e.shop import EventFactory, RecordingMailer, Shop

# The same environment and helpers as the in-process rules: only the transport differs.
from tests.e2e.test_shipping_rules import _default_environment, eventually, lines_of  # noqa: F401

pytestmark = pytest.mark.rabbitmq
HOUR = 3600.0


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[RabbitHarness]:
    harness = RabbitHarness(amqp_url)
    try:
        yield harness
    finally:
        await harness.cleanup()


def rabbit_shop(broker: RabbitHarness, data: Path, delay: float, mailer: RecordingMailer) -> Shop:
    return Shop(
        data,
        shipping_delay=delay,
        mailer=mailer,
        transport=broker.connect(),
        queue_prefix=broker.queue(""),
    )


async def test_a_cancellation_before_the_shipment_refunds_over_rabbitmq(
    broker: RabbitHarness, tmp_path: Path
) -> None:
    f = EventFactory(prefix="rmq-")
    mailer = RecordingMailer()
    async with rabbit_shop(broker, tmp_path, HOUR, mailer) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 4, "2.50")]))
        assert (await shop.orders())["o-1"]["status"] == "confirmed"
        cancel = f.cancel("o-1")
        await shop.publish(cancel)

        refund = shop.one("payment.refunded", "o-1")
        assert (refund.data.amount, refund.data.currency) == (Decimal("10.00"), "EUR")
        returned = shop.one("inventory.returned", "o-1")
        assert lines_of(returned) == [("A", 4)]
        assert shop.of_type("shipment.prepared") == []
        assert (await shop.orders())["o-1"] == {"status": "refunded", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)
        await eventually(lambda: len(mailer.sent) == 2, timeout=20.0)

        # The cancellation published again, and each effect redelivered to its consumer.
        emitted = len(shop.emitted)
        await shop.publish(cancel)
        for event, queue in [
            (cancel, "shipping"),
            (refund, "inventory"),
            (refund, "orders"),
            (refund, "notifications"),
            (returned, "shipping"),
        ]:
            await shop.redeliver(event, queue)
        assert len(shop.emitted) == emitted, [e.type for e in shop.emitted[emitted:]]
        assert (await shop.orders())["o-1"] == {"status": "refunded", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)
        await asyncio.sleep(0.3)  # the mail sender runs after commit, outside of `settle`
        assert len(mailer.sent) == 2


async def test_a_shipped_order_refuses_its_cancellation_over_rabbitmq(
    broker: RabbitHarness, tmp_path: Path
) -> None:
    f = EventFactory(prefix="rmq-")
    mailer = RecordingMailer()
    async with rabbit_shop(broker, tmp_path, 0, mailer) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 3, "1.00")]))
        shipment = shop.one("shipment.prepared", "o-1")
        assert lines_of(shipment) == [("A", 3)]
        before = (await shop.inventory(), await shop.orders())

        cancel = f.cancel("o-1")
        await shop.publish(cancel)
        refused = shop.one("order.cancellation_refused", "o-1")
        assert refused.data.reason == "shipped"
        for event_type in ("payment.refunded", "inventory.returned", "order.rejected"):
            assert shop.of_type(event_type) == [], event_type
        assert (await shop.inventory(), await shop.orders()) == before

        emitted = len(shop.emitted)
        await shop.publish(cancel)
        for event, queue in [
            (cancel, "shipping"),
            (shop.one("order.confirmed", "o-1"), "shipping"),
            (shipment, "notifications"),
            (shipment, "shipping"),
        ]:
            await shop.redeliver(event, queue)
        assert len(shop.emitted) == emitted, [e.type for e in shop.emitted[emitted:]]
        assert (await shop.inventory(), await shop.orders()) == before
        await eventually(lambda: len(mailer.sent) == 2, timeout=20.0)
        await asyncio.sleep(0.3)
        assert sorted(e.subject for e in mailer.sent) == [
            "Your order o-1 is confirmed",
            "Your order o-1 is ready to ship",
        ]
