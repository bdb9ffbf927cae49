"""The contract's rules on shipping and refunds, end to end on the in-process bus.

A confirmed order is prepared for shipment after a handling delay; a cancellation that
reaches shipping first refunds the payment, returns the stock and marks the order
refunded; a later one is refused and changes nothing. The handling delay is 0 where a
test wants the shipment, and an hour where it wants the window before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentbus.envelope import Event
from tests.e2e.shop import EventFactory, RecordingMailer, Shop

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PAYMENT_LIMIT",
        "SMTP_URL",
        "CUSTOMER_EMAIL_TEMPLATE",
        "AGENTBUS_SHIPPING_DELAY_S",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def f() -> EventFactory:
    return EventFactory()


def lines_of(event: Event[Any]) -> list[tuple[str, int]]:
    return sorted((line.sku, line.quantity) for line in event.data.lines)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def subjects(mailer: RecordingMailer) -> list[str]:
    return sorted(email.subject for email in mailer.sent)


async def test_a_confirmed_order_is_prepared_for_shipment(tmp_path: Path, f: EventFactory) -> None:
    mailer = RecordingMailer()
    async with Shop(tmp_path, shipping_delay=0, mailer=mailer) as shop:
        await shop.publish(f.received("A", 10), f.received("B", 3))
        await shop.publish(f.order("o-1", [("A", 5, "2.50"), ("B", 1, "1.00")]))

        shipment = shop.one("shipment.prepared", "o-1")
        assert lines_of(shipment) == [("A", 5), ("B", 1)]
        assert shipment.data.shipment_id
        confirmed = shop.one("order.confirmed", "o-1")
        assert shipment.causationid == confirmed.id
        assert shipment.correlationid == confirmed.correlationid
        assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
        assert await shop.inventory() == {
            "A": {"on_hand": 5, "reserved": 0, "available": 5},
            "B": {"on_hand": 2, "reserved": 0, "available": 2},
        }
        assert shop.of_type("payment.refunded") == []
        await eventually(lambda: len(mailer.sent) == 2)
        assert subjects(mailer) == [
            "Your order o-1 is confirmed",
            "Your order o-1 is ready to ship",
        ]


async def test_a_shipment_waits_for_its_handling_delay(tmp_path: Path, f: EventFactory) -> None:
    async with Shop(tmp_path, shipping_delay=0.5) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 1, "1.00")]))
        assert shop.of_type("order.confirmed", "o-1")
        assert shop.of_type("shipment.prepared", "o-1") == [], "not before the delay"
        await asyncio.sleep(0.6)
        await shop.settle()
        assert shop.one("shipment.prepared", "o-1")


async def test_a_cancellation_before_the_shipment_refunds_and_returns_the_stock(
    tmp_path: Path, f: EventFactory
) -> None:
    mailer = RecordingMailer()
    async with Shop(tmp_path, shipping_delay=HOUR, mailer=mailer) as shop:
        await shop.publish(f.received("A", 10), f.received("B", 3))
        await shop.publish(f.order("o-1", [("A", 4, "2.50"), ("B", 2, "0.75")]))
        authorized = shop.one("payment.authorized", "o-1")
        assert (await shop.orders())["o-1"]["status"] == "confirmed"
        assert await shop.stock("A") == (6, 0, 6)

        cancel = f.cancel("o-1")
        await shop.publish(cancel)
        refund = shop.one("payment.refunded", "o-1")
        assert (refund.data.amount, refund.data.currency) == (Decimal("11.50"), "EUR")
        assert (refund.data.amount, refund.data.currency) == (
            authorized.data.amount,
            authorized.data.currency,
        )
        assert refund.causationid == cancel.id
        returned = shop.one("inventory.returned", "o-1")
        assert lines_of(returned) == [("A", 4), ("B", 2)]
        assert returned.causationid == refund.id
        assert (await shop.orders())["o-1"] == {"status": "refunded", "reason": "cancelled"}
        assert await shop.inventory() == {
            "A": {"on_hand": 10, "reserved": 0, "available": 10},
            "B": {"on_hand": 3, "reserved": 0, "available": 3},
        }
        assert shop.of_type("shipment.prepared") == []
        assert shop.of_type("order.rejected") == []
        assert shop.of_type("inventory.released") == []
        await eventually(lambda: len(mailer.sent) == 2)
        assert subjects(mailer) == ["Your order o-1 is confirmed", "Your order o-1 is refunded"]
        assert "11.50 EUR" in next(e.body for e in mailer.sent if "refunded" in e.subject)

        # A second cancellation finds nothing left to stop.
        await shop.publish(f.cancel("o-1", "really"))
        assert len(shop.of_type("payment.refunded")) == 1
        assert shop.of_type("order.cancellation_refused") == []
        assert await shop.stock("A") == (10, 0, 10)


async def test_a_cancellation_after_the_shipment_is_refused_and_changes_nothing(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, shipping_delay=0) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 4, "1.00")]))
        assert shop.one("shipment.prepared", "o-1")
        before = (await shop.inventory(), await shop.orders())
        emitted = len(shop.emitted)

        cancel = f.cancel("o-1")
        await shop.publish(cancel)
        refused = shop.one("order.cancellation_refused", "o-1")
        assert refused.data.reason == "shipped"
        assert refused.causationid == cancel.id
        assert len(shop.emitted) == emitted + 1, "the refusal and nothing else"
        assert (await shop.inventory(), await shop.orders()) == before
        assert before[1]["o-1"] == {"status": "confirmed", "reason": None}


async def test_a_cancellation_before_confirmation_is_rejected_as_today(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, with_payments=False, shipping_delay=0) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 4, "1.00")]))
        await shop.publish(f.cancel("o-1"))
        assert shop.one("order.rejected", "o-1").data.reason == "cancelled"
        assert lines_of(shop.one("inventory.released", "o-1")) == [("A", 4)]
        # The gateway answering late confirms nothing, so nothing ships or is refunded.
        await shop.publish(f.authorized("o-1", "4.00"))
        for event_type in ("shipment.prepared", "payment.refunded", "order.cancellation_refused"):
            assert shop.of_type(event_type) == [], event_type
        assert (await shop.orders())["o-1"] == {"status": "rejected", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)


async def test_a_cancellation_that_reaches_shipping_before_the_confirmation_refunds(
    tmp_path: Path, f: EventFactory
) -> None:
    """Orders confirmed before it saw the cancellation; shipping saw it first."""
    async with Shop(tmp_path, with_payments=False, shipping_delay=0) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 4, "2.00")]))
        reserved = shop.one("inventory.reserved", "o-1")
        await shop.redeliver(f.cancel("o-1"), "shipping")  # only shipping has it
        await shop.publish(f.authorized("o-1", "8.00", cause=reserved))

        assert shop.one("order.confirmed", "o-1")
        assert shop.one("payment.refunded", "o-1").data.amount == Decimal("8.00")
        assert lines_of(shop.one("inventory.returned", "o-1")) == [("A", 4)]
        assert shop.of_type("shipment.prepared") == []
        assert (await shop.orders())["o-1"] == {"status": "refunded", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)


async def test_redelivered_shipping_events_change_nothing(tmp_path: Path, f: EventFactory) -> None:
    mailer = RecordingMailer()
    async with Shop(tmp_path, shipping_delay=HOUR, mailer=mailer) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-refunded", [("A", 2, "1.00")]))
        cancel = f.cancel("o-refunded")
        await shop.publish(cancel)
        # The same files again, now with no handling delay: the next order ships at once.
    async with Shop(tmp_path, shipping_delay=0, mailer=mailer) as shop:
        await shop.publish(f.order("o-shipped", [("A", 3, "1.00")]))
        late = f.cancel("o-shipped")
        await shop.publish(late)
        await eventually(lambda: len(mailer.sent) == 4)
        before = (await shop.inventory(), await shop.orders())
        assert before[0]["A"] == {"on_hand": 7, "reserved": 0, "available": 7}
        assert before[1] == {
            "o-refunded": {"status": "refunded", "reason": "cancelled"},
            "o-shipped": {"status": "confirmed", "reason": None},
        }
        shipped = shop.one("shipment.prepared", "o-shipped")
        refused = shop.one("order.cancellation_refused", "o-shipped")
        emitted = len(shop.emitted)

        await shop.publish(late, cancel)
        confirmed = shop.one("order.confirmed", "o-shipped")
        for event, queue in [
            (confirmed, "shipping"),
            (shipped, "shipping"),
            (shipped, "notifications"),
            (refused, "notifications"),
            (late, "shipping"),
            (cancel, "shipping"),
            (cancel, "orders"),
            (cancel, "inventory"),
        ]:
            await shop.redeliver(event, queue)
        assert len(shop.emitted) == emitted, [e.type for e in shop.emitted[emitted:]]
        assert (await shop.inventory(), await shop.orders()) == before
        await asyncio.sleep(0.2)  # the mail sender runs after commit, outside of `settle`
        assert len(mailer.sent) == 4
