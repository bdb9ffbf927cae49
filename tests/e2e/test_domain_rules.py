"""The domain rules of CONTRACT.md, end to end: inputs on the bus in, state and events out.

Each test runs the four deterministic services in one process (see `shop.py`) and
checks one rule through what a client can see: the events on the bus and the
state the CLI prints.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbus.envelope import Event
from consumers.notifications.mailer import SmtpMailer
from events import InventoryReserved, ReservedLine
from tests.e2e.shop import EventFactory, Line, RecordingMailer, Shop

ZERO = {"on_hand": 0, "reserved": 0, "available": 0}


@pytest.fixture(autouse=True)
def _default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The services read these at run time; a developer's shell must not change outcomes.
    for name in ("PAYMENT_LIMIT", "SMTP_URL", "CUSTOMER_EMAIL_TEMPLATE", "REVIEWERS_EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def f() -> EventFactory:
    return EventFactory()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with Shop(tmp_path) as running:
        yield running


def lines_of(event: Event[Any]) -> list[tuple[str, int]]:
    return sorted((line.sku, line.quantity) for line in event.data.lines)


def shortages_of(event: Event[Any]) -> list[tuple[str, int, int]]:
    return sorted((s.sku, s.requested, s.available) for s in event.data.shortages)


def level(on_hand: int, reserved: int) -> dict[str, int]:
    return {"on_hand": on_hand, "reserved": reserved, "available": on_hand - reserved}


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """For what happens after `settle` says idle: the mail sender works off-queue."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# 1 -------------------------------------------------------------------------------------


async def test_stock_is_kept_per_sku_and_an_unknown_sku_has_none(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("mug", 10), f.received("cap", 4))
        await shop.publish(f.order("o-1", [("mug", 3, "5.00")]))

        state = await shop.inventory()
        assert state["mug"] == level(10, 3)
        assert state["cap"] == level(4, 0)
        for row in state.values():
            assert row["available"] == row["on_hand"] - row["reserved"]

        await shop.publish(f.order("o-ghost", [("ghost", 1, "5.00")]))
        failed = shop.one("inventory.reservation_failed", "o-ghost")
        assert shortages_of(failed) == [("ghost", 1, 0)]
        assert shop.of_type("inventory.reserved", "o-ghost") == []
        assert (await shop.orders())["o-ghost"] == {"status": "rejected", "reason": "out_of_stock"}
        assert (await shop.inventory()).get("ghost", ZERO) == ZERO


# 2 -------------------------------------------------------------------------------------


async def test_an_order_reserves_every_line_or_none(tmp_path: Path, f: EventFactory) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("A", 10), f.received("B", 2), f.received("C", 1))
        await shop.publish(f.order("o-1", [("A", 4, "1.00"), ("B", 2, "1.00")]))
        assert lines_of(shop.one("inventory.reserved", "o-1")) == [("A", 4), ("B", 2)]
        before = await shop.inventory()
        assert before == {"A": level(10, 4), "B": level(2, 2), "C": level(1, 0)}

        # A is fine (6 available); B (0 available) and C (1 available) are both short.
        await shop.publish(f.order("o-2", [("A", 5, "1.00"), ("B", 1, "1.00"), ("C", 3, "1.00")]))
        failed = shop.one("inventory.reservation_failed", "o-2")
        assert shortages_of(failed) == [("B", 1, 0), ("C", 3, 1)]
        assert shop.of_type("inventory.reserved", "o-2") == []
        assert await shop.inventory() == before, "a failed order holds nothing, not even A"
        assert (await shop.orders())["o-2"] == {"status": "rejected", "reason": "out_of_stock"}


# 3 -------------------------------------------------------------------------------------


async def test_payment_fails_above_the_default_limit_and_passes_at_it(
    shop: Shop, f: EventFactory
) -> None:
    await shop.publish(f.received("A", 100), f.received("B", 100))
    # 3 x 1234.50 + 2 x 648.25 = 5000.00 exactly; 1 x 4999.99 + 1 x 0.02 = 5000.01.
    await shop.publish(
        f.order("o-at", [("A", 3, "1234.50"), ("B", 2, "648.25")]),
        f.order("o-over", [("A", 1, "4999.99"), ("B", 1, "0.02")]),
    )
    authorized = shop.one("payment.authorized", "o-at")
    assert authorized.data.amount == Decimal("5000.00")
    assert authorized.data.currency == "EUR"
    failed = shop.one("payment.failed", "o-over")
    assert failed.data.amount == Decimal("5000.01")
    assert failed.data.reason == "limit_exceeded"
    assert shop.of_type("payment.failed", "o-at") == []
    assert shop.of_type("payment.authorized", "o-over") == []
    assert await shop.orders() == {
        "o-at": {"status": "confirmed", "reason": None},
        "o-over": {"status": "rejected", "reason": "payment_failed"},
    }


@pytest.mark.parametrize("how", ["argument", "PAYMENT_LIMIT"])
async def test_a_configured_payment_limit_is_honoured(
    tmp_path: Path, f: EventFactory, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    limit = None
    if how == "argument":
        limit = Decimal("100.00")
    else:
        monkeypatch.setenv("PAYMENT_LIMIT", "100.00")
    async with Shop(tmp_path, payment_limit=limit) as shop:
        await shop.publish(f.received("A", 50))
        await shop.publish(
            f.order("o-at", [("A", 10, "10.00")]), f.order("o-over", [("A", 10, "10.01")])
        )
        assert shop.one("payment.authorized", "o-at").data.amount == Decimal("100.00")
        failed = shop.one("payment.failed", "o-over")
        assert (failed.data.amount, failed.data.reason) == (Decimal("100.10"), "limit_exceeded")


# 4 -------------------------------------------------------------------------------------


async def test_an_authorized_payment_confirms_the_order_and_commits_its_stock(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("A", 10), f.received("B", 5))
        await shop.publish(f.order("o-1", [("A", 3, "2.00"), ("B", 5, "1.00")]))
        assert await shop.inventory() == {"A": level(10, 3), "B": level(5, 5)}
        assert (await shop.orders())["o-1"] == {"status": "pending", "reason": None}

        reserved = shop.one("inventory.reserved", "o-1")
        await shop.publish(f.authorized("o-1", "11.00", cause=reserved))
        assert shop.one("order.confirmed", "o-1").data.order_id == "o-1"
        assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
        # on_hand and reserved drop together: available is what it was after the reservation.
        assert await shop.inventory() == {"A": level(7, 0), "B": level(0, 0)}
        assert shop.of_type("inventory.released", "o-1") == []


async def test_a_payment_outcome_that_overtakes_its_order_waits_for_it(
    tmp_path: Path, f: EventFactory
) -> None:
    # Where event types travel apart (Kafka: a topic each), orders may see the gateway's
    # answer first; dropped, it would leave the order pending for good.
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.authorized("o-1", "2.00"), settle=False)
        await shop.publish(f.order("o-1", [("A", 1, "2.00")]))
        await eventually(lambda: len(shop.of_type("order.confirmed", "o-1")) == 1)
        assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
        assert await shop.dead_letters("orders") == []


async def test_a_reservation_that_overtakes_its_order_is_paid_when_the_order_arrives(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path) as shop:
        await shop.publish(f.received("A", 10))
        early = f.event(
            InventoryReserved(order_id="o-1", lines=[ReservedLine(sku="A", quantity=1)])
        )
        await shop.publish(early)
        assert shop.of_type("payment.authorized", "o-1") == []  # no amount to ask for yet
        await shop.publish(f.order("o-1", [("A", 1, "2.00")]))
        assert shop.one("payment.authorized", "o-1").data.amount == Decimal("2.00")
        assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
        assert await shop.dead_letters("payments") == []


# 5 -------------------------------------------------------------------------------------


async def test_a_failed_payment_rejects_the_order_and_releases_its_stock(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, payment_limit=Decimal("50.00")) as shop:
        await shop.publish(f.received("A", 10))
        before = await shop.inventory()
        await shop.publish(f.order("o-1", [("A", 6, "10.00")]))

        assert lines_of(shop.one("inventory.reserved", "o-1")) == [("A", 6)]
        assert shop.one("payment.failed", "o-1").data.reason == "limit_exceeded"
        assert shop.one("order.rejected", "o-1").data.reason == "payment_failed"
        assert lines_of(shop.one("inventory.released", "o-1")) == [("A", 6)]
        assert shop.of_type("order.confirmed", "o-1") == []
        assert (await shop.orders())["o-1"] == {"status": "rejected", "reason": "payment_failed"}
        assert await shop.inventory() == before == {"A": level(10, 0)}


# 6 -------------------------------------------------------------------------------------


async def test_cancelling_before_confirmation_rejects_and_releases(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(f.order("o-1", [("A", 4, "1.00")]))
        assert await shop.stock("A") == (10, 4, 6)

        await shop.publish(f.cancel("o-1"))
        assert shop.one("order.rejected", "o-1").data.reason == "cancelled"
        assert lines_of(shop.one("inventory.released", "o-1")) == [("A", 4)]
        assert (await shop.orders())["o-1"] == {"status": "rejected", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)

        # The gateway answering late cannot revive a rejected order or take its goods.
        await shop.publish(f.authorized("o-1", "4.00"))
        assert shop.of_type("order.confirmed", "o-1") == []
        assert (await shop.orders())["o-1"] == {"status": "rejected", "reason": "cancelled"}
        assert await shop.stock("A") == (10, 0, 10)


async def test_a_cancellation_right_behind_its_order_wins_over_the_gateway(
    shop: Shop, f: EventFactory
) -> None:
    await shop.publish(f.received("A", 10))
    # One batch: the cancellation is queued before any payment outcome can exist.
    await shop.publish(f.order("o-1", [("A", 4, "1.00")]), f.cancel("o-1"))
    assert (await shop.orders())["o-1"] == {"status": "rejected", "reason": "cancelled"}
    assert shop.of_type("order.confirmed", "o-1") == []
    assert lines_of(shop.one("inventory.released", "o-1")) == [("A", 4)]
    assert await shop.stock("A") == (10, 0, 10)


async def test_cancelling_after_confirmation_changes_nothing(shop: Shop, f: EventFactory) -> None:
    await shop.publish(f.received("A", 10))
    await shop.publish(f.order("o-1", [("A", 4, "1.00")]))
    assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
    assert await shop.stock("A") == (6, 0, 6)
    emitted = list(shop.emitted)

    await shop.publish(f.cancel("o-1"))
    assert shop.emitted == emitted, "no rejection, no release"
    assert (await shop.orders())["o-1"] == {"status": "confirmed", "reason": None}
    assert await shop.stock("A") == (6, 0, 6)


# 7 -------------------------------------------------------------------------------------


async def test_stock_movements_change_on_hand_and_never_take_it_below_zero(
    shop: Shop, f: EventFactory
) -> None:
    await shop.publish(f.received("A", 10))
    assert await shop.stock("A") == (10, 0, 10)
    await shop.publish(f.adjusted("A", -3, "breakage"))
    assert await shop.stock("A") == (7, 0, 7)
    await shop.publish(f.adjusted("A", 5, "found in the back"))
    assert await shop.stock("A") == (12, 0, 12)

    # Published together, so they may share a batch: the bad one must not sink the good one.
    too_much = f.adjusted("A", -13, "miscount")
    unknown = f.adjusted("nowhere", -1, "miscount")
    await shop.publish(too_much, f.received("A", 2), unknown)
    letters = {letter.event_id: letter for letter in await shop.dead_letters("inventory")}
    assert set(letters) == {too_much.id, unknown.id}
    for letter in letters.values():
        assert letter.error_code == "negative_stock"
        assert letter.detail, "a dead letter says why"
    assert "A" in letters[too_much.id].detail
    assert await shop.stock("A") == (14, 0, 14)
    assert await shop.stock("nowhere") == (0, 0, 0)

    # The service is still serving, and down to exactly zero is allowed.
    await shop.publish(f.adjusted("A", -14, "write-off"))
    assert await shop.stock("A") == (0, 0, 0)
    assert len(await shop.dead_letters("inventory")) == 2


# 8 -------------------------------------------------------------------------------------


async def test_low_stock_is_signalled_once_per_downward_crossing(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.product("A", reorder_point=5, max_stock=40, lead_time_days=6))

        async def step(event: Event[Any], lows: int) -> None:
            await shop.publish(event)
            assert len(shop.of_type("inventory.low", "A")) == lows, f"after {event.id}"

        await step(f.received("A", 10), 0)  # 0 -> 10: upwards
        await step(f.adjusted("A", -5), 0)  # 10 -> 5: at the reorder point is not below it
        crossing = f.order("o-1", [("A", 1, "1.00")])
        await step(crossing, 1)  # 5 -> 4, by a reservation
        await step(f.adjusted("A", -2), 1)  # 4 -> 2: still low, no repeat
        await step(f.received("A", 1), 1)  # 2 -> 3: up, but still below
        await step(f.received("A", 2), 1)  # 3 -> 5: back at the reorder point: re-armed
        again = f.adjusted("A", -1)
        await step(again, 2)  # 5 -> 4

        first, second = shop.of_type("inventory.low", "A")
        expected = {
            "sku": "A",
            "available": 4,
            "on_hand": 5,
            "reserved": 1,
            "reorder_point": 5,
            "max_stock": 40,
            "lead_time_days": 6,
        }
        assert first.data.model_dump() == expected
        assert first.causationid == crossing.id
        assert second.data.model_dump() == expected
        assert second.causationid == again.id


# 9 -------------------------------------------------------------------------------------


def assert_linked(shop: Shop) -> None:
    """Every emitted event names its cause (seen on the bus) and its cause's flow."""
    by_id = {event.id: event for event in shop.seen}
    for event in shop.emitted:
        assert event.causationid is not None, event
        assert event.correlationid is not None, event
        assert event.causationid in by_id, f"{event.type} names an unseen cause"
        cause = by_id[event.causationid]
        assert event.correlationid == (cause.correlationid or cause.id), event


async def test_every_emitted_event_carries_its_flow_and_its_cause(
    tmp_path: Path, f: EventFactory
) -> None:
    async with Shop(tmp_path, payment_limit=Decimal("100.00")) as shop:
        await shop.publish(f.product("A", reorder_point=5), f.received("A", 10))
        paid = f.order("o-paid", [("A", 6, "10.00")])  # also takes A below its reorder point
        declined = f.order("o-declined", [("A", 2, "60.00")])
        short = f.order("o-short", [("A", 50, "1.00")])
        await shop.publish(paid)
        await shop.publish(declined)
        await shop.publish(short)
        assert_linked(shop)

        def chain(root: Event[Any], *types: str) -> None:
            cause = root
            for event_type in types:
                event = shop.one(event_type, root.subject)
                assert (event.correlationid, event.causationid) == (root.id, cause.id), event
                cause = event
            flow = [e for e in shop.emitted if e.correlationid == root.id]
            assert sorted(e.type for e in flow if e.subject == root.subject) == sorted(types)

        chain(paid, "inventory.reserved", "payment.authorized", "order.confirmed")
        low = shop.one("inventory.low", "A")
        assert (low.correlationid, low.causationid) == (paid.id, paid.id)
        chain(
            declined,
            "inventory.reserved",
            "payment.failed",
            "order.rejected",
            "inventory.released",
        )
        chain(short, "inventory.reservation_failed", "order.rejected")


# 10 ------------------------------------------------------------------------------------


async def snapshot(shop: Shop) -> tuple[Any, ...]:
    return (
        await shop.inventory(),
        await shop.orders(),
        Counter(event.id for event in shop.emitted),
    )


async def test_duplicates_and_redeliveries_change_nothing(tmp_path: Path, f: EventFactory) -> None:
    mailer = RecordingMailer()
    async with Shop(tmp_path, payment_limit=Decimal("100.00"), mailer=mailer) as shop:
        story = [
            f.product("A", reorder_point=5),
            f.received("A", 10),
            f.received("B", 3),
            f.order("o-paid", [("A", 6, "10.00")]),
            f.order("o-short", [("B", 5, "1.00")]),
            f.order("o-declined", [("A", 2, "60.00")]),
            f.cancel("o-cancelled"),
            f.order("o-cancelled", [("A", 1, "1.00")]),
            f.adjusted("B", -1),
        ]
        for event in story:
            await shop.publish(event)
        await eventually(lambda: len(mailer.sent) == 3)
        before = await snapshot(shop)
        assert before[0] == {"A": level(4, 0), "B": level(2, 0)}
        assert before[1] == {
            "o-paid": {"status": "confirmed", "reason": None},
            "o-short": {"status": "rejected", "reason": "out_of_stock"},
            "o-declined": {"status": "rejected", "reason": "payment_failed"},
            "o-cancelled": {"status": "rejected", "reason": "cancelled"},
        }

        await shop.publish(*story, *story[3:6])
        assert await snapshot(shop) == before

        # A redelivery reaches one consumer only, derived events included.
        paid, declined = story[3], story[5]
        for event, queue in [
            (paid, "inventory"),
            (paid, "payments"),
            (paid, "orders"),
            (shop.one("inventory.reserved", "o-paid"), "payments"),
            (shop.one("payment.authorized", "o-paid"), "orders"),
            (shop.one("order.confirmed", "o-paid"), "inventory"),
            (shop.one("order.confirmed", "o-paid"), "notifications"),
            (shop.one("order.rejected", "o-declined"), "inventory"),
            (shop.one("order.rejected", "o-declined"), "notifications"),
            (declined, "inventory"),
        ]:
            await shop.redeliver(event, queue)
        assert await snapshot(shop) == before
        await asyncio.sleep(0.2)  # the mail sender runs after commit, outside of `settle`
        assert len(mailer.sent) == 3


# 11 ------------------------------------------------------------------------------------


async def test_order_state_names_status_and_reason(tmp_path: Path, f: EventFactory) -> None:
    async with Shop(tmp_path, with_payments=False) as shop:
        await shop.publish(f.received("A", 10))
        await shop.publish(
            f.order("o-confirmed", [("A", 1, "1.00")]),
            f.order("o-short", [("A", 50, "1.00")]),
            f.order("o-declined", [("A", 2, "1.00")]),
            f.order("o-cancelled", [("A", 3, "1.00")]),
            f.order("o-pending", [("A", 1, "1.00")]),
        )
        await shop.publish(
            f.authorized("o-confirmed", "1.00"),
            f.payment_failed("o-declined", "2.00"),
            f.cancel("o-cancelled"),
        )
        assert await shop.orders() == {
            "o-confirmed": {"status": "confirmed", "reason": None},
            "o-short": {"status": "rejected", "reason": "out_of_stock"},
            "o-declined": {"status": "rejected", "reason": "payment_failed"},
            "o-cancelled": {"status": "rejected", "reason": "cancelled"},
            "o-pending": {"status": "pending", "reason": None},
        }
        # Only the pending order still holds stock; the confirmed one took its unit.
        assert await shop.stock("A") == (9, 1, 8)


# 12 ------------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler that keeps what it receives (it runs in the server's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [message for rcpts, message in self.messages if address in rcpts]

    def __len__(self) -> int:
        with self.lock:
            return len(self.messages)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


async def test_notifications_send_one_email_per_outcome_and_suggestion(
    tmp_path: Path,
    f: EventFactory,
    smtp: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp
    monkeypatch.setenv("CUSTOMER_EMAIL_TEMPLATE", "{customer_id}@example.test")
    monkeypatch.setenv("REVIEWERS_EMAIL", "reviewers@example.test")
    monkeypatch.setenv("REVIEW_PUBLIC_URL", "https://review.example.test/")
    mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", "shop@example.test")
    async with Shop(tmp_path, mailer=mailer) as shop:
        story = [
            f.received("A", 5),
            f.order("o-1", [("A", 2, "3.00")], customer="alice"),
            f.order("o-2", [("A", 10, "3.00")], customer="bob"),
            f.restock_recommended("A", 20),
        ]
        await shop.publish(*story)
        assert (await shop.orders())["o-1"]["status"] == "confirmed"
        assert (await shop.orders())["o-2"]["status"] == "rejected"
        await eventually(lambda: len(inbox) >= 3)
        await asyncio.sleep(0.2)  # room for an unwanted fourth
        assert len(inbox) == 3

        [confirmed] = inbox.to("alice@example.test")
        assert "o-1" in confirmed["Subject"]
        assert "confirmed" in confirmed["Subject"]
        [rejected] = inbox.to("bob@example.test")
        assert "o-2" in rejected["Subject"]
        assert "out_of_stock" in rejected.get_payload()
        [suggested] = inbox.to("reviewers@example.test")
        assert "A" in suggested["Subject"]
        assert "Review it: https://review.example.test/suggestions/" in suggested.get_payload()
        assert all(m["From"] == "shop@example.test" for _, m in inbox.messages)

        await shop.publish(*story)
        await asyncio.sleep(0.3)
        assert len(inbox) == 3, "the same events again send nothing"


# The oracle -------------------------------------------------------------------------

SKUS = ("red", "green", "blue")
PRICES = ("1.00", "2.50", "7.25")
LIMIT = Decimal("20.00")

Step = tuple[Any, ...]
receive = st.tuples(st.just("receive"), st.sampled_from(SKUS), st.integers(1, 8))
order = st.tuples(
    st.just("order"),
    st.lists(
        st.tuples(st.sampled_from(SKUS), st.integers(1, 4), st.sampled_from(PRICES)),
        min_size=1,
        max_size=3,
        unique_by=lambda line: line[0],
    ),
)
# May name an order that comes later in the story, or never.
cancel = st.tuples(st.just("cancel"), st.integers(0, 3))
# Opening stock, so that orders are often served and not only refused.
opening = st.tuples(*(st.tuples(st.just("receive"), st.just(s), st.integers(1, 12)) for s in SKUS))
plans = st.tuples(opening, st.lists(st.one_of(receive, order, cancel), min_size=1, max_size=12))


def total(lines: list[Line]) -> Decimal:
    return sum((quantity * Decimal(str(price)) for _, quantity, price in lines), Decimal(0))


class Oracle:
    """The contract's rules applied one event at a time, in publish order."""

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit
        self.on_hand = dict.fromkeys(SKUS, 0)
        self.orders: dict[str, dict[str, Any]] = {}

    def receive(self, sku: str, quantity: int) -> None:
        self.on_hand[sku] += quantity

    def order(self, order_id: str, lines: list[Line]) -> None:
        if order_id in self.orders:
            return  # cancelled before it arrived
        if any(quantity > self.on_hand[sku] for sku, quantity, _ in lines):
            self.orders[order_id] = {"status": "rejected", "reason": "out_of_stock"}
        elif total(lines) > self.limit:
            self.orders[order_id] = {"status": "rejected", "reason": "payment_failed"}
        else:
            # Reserved, authorized and committed: nothing stays reserved.
            for sku, quantity, _ in lines:
                self.on_hand[sku] -= quantity
            self.orders[order_id] = {"status": "confirmed", "reason": None}

    def cancel(self, order_id: str) -> None:
        # With the gateway always answering, an order is decided by the time a later
        # event is applied, so a cancellation only affects an order not seen yet.
        self.orders.setdefault(order_id, {"status": "rejected", "reason": "cancelled"})

    def inventory(self) -> dict[str, dict[str, int]]:
        return {sku: level(on_hand, 0) for sku, on_hand in self.on_hand.items()}


def story_of(plan: list[Step]) -> tuple[list[list[Event[Any]]], Oracle]:
    """The events, in chunks published as one, and the oracle's verdict on them.

    A chunk ends where the system's asynchrony could make the outcome depend on
    timing rather than on publish order: around a cancellation (it races the
    outcome of an order in flight) and after an order that will fail payment
    (its stock is released only later). Within a chunk, stock arrivals and orders
    meet in publish order, since inventory applies its queue in order.
    """
    f = EventFactory()
    oracle = Oracle(LIMIT)
    chunks: list[list[Event[Any]]] = [[]]
    orders = 0
    for step in plan:
        if step[0] == "receive":
            _, sku, quantity = step
            chunks[-1].append(f.received(sku, quantity))
            oracle.receive(sku, quantity)
        elif step[0] == "order":
            lines: list[Line] = list(step[1])
            order_id = f"o-{orders}"
            orders += 1
            chunks[-1].append(f.order(order_id, lines))
            oracle.order(order_id, lines)
            if total(lines) > LIMIT:
                chunks.append([])
        else:
            order_id = f"o-{step[1]}"
            chunks.append([f.cancel(order_id)])
            chunks.append([])
            oracle.cancel(order_id)
    return [chunk for chunk in chunks if chunk], oracle


async def run_story(plan: list[Step], data_dir: Path) -> None:
    chunks, oracle = story_of(plan)
    for outcome in sorted({row["reason"] or row["status"] for row in oracle.orders.values()}):
        hypothesis.event(outcome)
    async with Shop(data_dir, payment_limit=LIMIT) as shop:
        for chunk in chunks:
            await shop.publish(*chunk)
        inventory = await shop.inventory()
        assert set(inventory) <= set(SKUS)
        assert {sku: inventory.get(sku, ZERO) for sku in SKUS} == oracle.inventory()
        assert await shop.orders() == oracle.orders

        # The whole story again, in one go: all duplicates, nothing changes.
        await shop.publish(*(event for chunk in chunks for event in chunk))
        assert {sku: (await shop.inventory()).get(sku, ZERO) for sku in SKUS} == (
            oracle.inventory()
        )
        assert await shop.orders() == oracle.orders


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans)
def test_random_stories_match_a_sequential_oracle(plan: tuple[Sequence[Step], list[Step]]) -> None:
    stock, story = plan
    with tempfile.TemporaryDirectory() as data_dir:
        asyncio.run(run_story([*stock, *story], Path(data_dir)))
