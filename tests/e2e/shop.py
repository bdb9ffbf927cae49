"""The shop in one process, for end-to-end tests of the contract's domain rules.

`Shop` runs the inventory, orders, payments and notifications services on an
in-memory broker with SQLite files under a test folder, records every event that
crosses the bus (full events, decoded as a consumer would), and reads the state
the CLI would print. `EventFactory` writes the inputs with readable ids and
increasing times, so a failing test names the event it is about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from agentbus.bootstrap import bootstrap
from agentbus.deadletters import DeadLetter, list_dead_letters
from agentbus.envelope import Event, new_event
from agentbus.settings import Settings
from agentbus.store import Database, open_database
from agentbus.transport.base import Delivery, QueueSpec, Transport
from consumers import inventory, notifications, orders, payments, shipping
from consumers.notifications.mailer import Email, Mailer
from events import (
    CATALOG,
    InventoryAdjusted,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    PaymentAuthorized,
    PaymentFailed,
    ProductUpserted,
    RestockRecommended,
    StockReceived,
)

OBSERVER = "e2e.observer"
SOURCE = "/tests/e2e"

Line = tuple[str, int, str | Decimal]  # sku, quantity, unit price


class RecordingMailer:
    """Keeps emails in memory: the default, so a stray SMTP_URL never sends real mail."""

    def __init__(self) -> None:
        self.sent: list[Email] = []

    async def send(self, email: Email) -> None:
        self.sent.append(email)


class EventFactory:
    """Input events as a story: ids like `003-order.created-o-1`, one second apart."""

    def __init__(self, start: datetime | None = None, *, prefix: str = "") -> None:
        self.time = start or datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
        self.prefix = prefix
        self.count = 0

    def event(self, data: Any, *, cause: Event[Any] | None = None) -> Event[Any]:
        self.count += 1
        self.time += timedelta(seconds=1)
        subject = getattr(data, data.subject_field)
        event_id = f"{self.prefix}{self.count:03d}-{data.event_type}-{subject}"
        return new_event(data, source=SOURCE, cause=cause, id=event_id, time=self.time)

    def product(
        self,
        sku: str,
        *,
        reorder_point: int = 0,
        max_stock: int = 100,
        lead_time_days: int = 3,
        unit_price: str = "10.00",
    ) -> Event[Any]:
        return self.event(
            ProductUpserted(
                sku=sku,
                name=f"Product {sku}",
                description=f"The {sku} of the test shop.",
                category="test",
                unit_cost=Decimal("1.00"),
                unit_price=Decimal(unit_price),
                lead_time_days=lead_time_days,
                reorder_point=reorder_point,
                max_stock=max_stock,
                supplier="Acme",
            )
        )

    def received(self, sku: str, quantity: int) -> Event[Any]:
        return self.event(StockReceived(sku=sku, quantity=quantity, purchase_order_id=None))

    def adjusted(self, sku: str, delta: int, reason: str = "count") -> Event[Any]:
        return self.event(InventoryAdjusted(sku=sku, delta=delta, reason=reason))

    def order(self, order_id: str, lines: Sequence[Line], *, customer: str = "alice") -> Event[Any]:
        return self.event(
            OrderCreated(
                order_id=order_id,
                customer_id=customer,
                lines=[
                    OrderLine(sku=sku, quantity=quantity, unit_price=Decimal(str(price)))
                    for sku, quantity, price in lines
                ],
                currency="EUR",
                note=None,
            )
        )

    def cancel(self, order_id: str, reason: str = "changed my mind") -> Event[Any]:
        return self.event(OrderCancelled(order_id=order_id, reason=reason))

    def authorized(
        self, order_id: str, amount: str, *, cause: Event[Any] | None = None
    ) -> Event[Any]:
        """The test playing the gateway, when a test holds an order pending on purpose."""
        return self.event(
            PaymentAuthorized(order_id=order_id, amount=Decimal(amount), currency="EUR"),
            cause=cause,
        )

    def payment_failed(
        self, order_id: str, amount: str, *, cause: Event[Any] | None = None
    ) -> Event[Any]:
        return self.event(
            PaymentFailed(
                order_id=order_id, amount=Decimal(amount), currency="EUR", reason="declined"
            ),
            cause=cause,
        )

    def restock_recommended(self, sku: str, quantity: int) -> Event[Any]:
        return self.event(
            RestockRecommended(
                recommendation_id=f"rec-{sku}-{self.count + 1}",
                sku=sku,
                quantity=quantity,
                urgency="high",
                rationale=f"{sku} is below its reorder point.",
                evidence=[],
                confidence=0.9,
                agent="restock-agent",
                model="scripted",
                prompt_version="v1",
                trigger_event_id="trigger",
            )
        )


class Shop:
    """The four deterministic services on one in-memory broker.

    `shipping_delay` adds the shipping service with that handling delay (seconds).
    `with_payments=False` leaves the gateway out: an order then stays pending after its
    reservation, which is the only way to look at that state deterministically;
    the test plays the gateway with `EventFactory.authorized` / `payment_failed`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        with_payments: bool = True,
        payment_limit: Decimal | None = None,
        mailer: Mailer | None = None,
        shipping_delay: float | None = None,
        transport: Transport | None = None,
        queue_prefix: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.prefix = queue_prefix
        self.observer = f"{queue_prefix}{OBSERVER}"
        self.mailer: Mailer = mailer if mailer is not None else RecordingMailer()
        base = Settings.from_env(
            # Short retry delays: a transient retry must not stall a test for seconds.
            {"AGENTBUS_RETRY_DELAY": "0.05", "AGENTBUS_RETRY_MAX_DELAY": "0.2"}
        )
        self.settings = replace(base, data_dir=data_dir, database_url=None)
        services = [inventory.build(), orders.build()]
        if with_payments:
            services.append(payments.build(limit=payment_limit))
        services.append(notifications.build(mailer=self.mailer))
        if shipping_delay is not None:
            services.append(shipping.build(delay=shipping_delay))
        for service in services:
            service.queue = f"{queue_prefix}{service.name}"
        # Another transport (a real broker) runs the same rules over the wire; the
        # prefix keeps its queues apart from any other run's on that broker.
        self.system = bootstrap(self.settings, CATALOG, services, transport=transport)
        self.transport, self.bus, self.host = (
            self.system.transport,
            self.system.bus,
            self.system.host,
        )
        self.codec = self.bus.codec
        # Declared before the services start, so that nothing they publish is missed.
        self.system.observe(
            QueueSpec(self.observer, bindings=("#",), kind="classic", transient=True),
            self._observe,
            prefetch=1024,
        )
        self.seen: list[Event[Any]] = []
        self.published: list[Event[Any]] = []
        self._readers: dict[str, Database] = {}

    async def __aenter__(self) -> Shop:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.system.open()
        await self.system.start()

    async def stop(self) -> None:
        try:
            await self.system.close()
        finally:
            for reader in self._readers.values():
                await reader.close()
            self._readers.clear()

    async def _observe(self, delivery: Delivery) -> None:
        message = delivery.message
        self.seen.append(
            self.codec.decode(
                message.body, content_type=message.content_type, message_type=message.type
            )
        )
        await delivery.ack()

    # -- driving -----------------------------------------------------------------------

    async def publish(self, *events: Event[Any], settle: bool = True) -> None:
        """Publish in this order (one confirmed batch), then wait for the dust to settle."""
        self.published.extend(events)
        await self.bus.publish_many(list(events))
        if settle:
            await self.settle()

    async def redeliver(self, event: Event[Any], queue: str) -> None:
        """Put a copy of an event straight into one service's queue, as a redelivery does."""
        await self.transport.send_to_queue(self.prefix + queue, self.bus.to_message(event))
        await self.settle()

    async def settle(self) -> None:
        await self.host.settle(interval=0.01, stable=3, timeout=30)
        # The observer is no service of the host: wait for it to have read everything.
        for _ in range(1000):
            if not await self.transport.depth(self.observer):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    # -- reading -----------------------------------------------------------------------

    async def _read(self, service: str, reader: Any) -> Any:
        database = self._readers.get(service)
        if database is None:
            database = open_database(service, self.codec, url=None, data_dir=self.data_dir)
            self._readers[service] = database
        return await database.read(reader)

    async def inventory(self) -> dict[str, dict[str, int]]:
        """`agentbus state inventory`: {sku: {on_hand, reserved, available}}."""
        state: dict[str, dict[str, int]] = await self._read("inventory", inventory.read_state)
        return state

    async def stock(self, sku: str) -> tuple[int, int, int]:
        """(on_hand, reserved, available) of a SKU; an unknown SKU has none."""
        row = (await self.inventory()).get(sku, {"on_hand": 0, "reserved": 0, "available": 0})
        return row["on_hand"], row["reserved"], row["available"]

    async def orders(self) -> dict[str, dict[str, Any]]:
        """`agentbus state orders`: {order_id: {status, reason}}."""
        state: dict[str, dict[str, Any]] = await self._read("orders", orders.read_state)
        return state

    async def dead_letters(self, queue: str = "inventory") -> list[DeadLetter]:
        return await list_dead_letters(self.transport, [self.prefix + queue])

    # -- what went over the bus -----------------------------------------------------------

    @property
    def emitted(self) -> list[Event[Any]]:
        """Events the services produced (everything seen except the test's inputs)."""
        inputs = {event.id for event in self.published}
        return [event for event in self.seen if event.id not in inputs]

    def of_type(self, event_type: str, subject: str | None = None) -> list[Event[Any]]:
        return [
            event
            for event in self.emitted
            if event.type == event_type and (subject is None or event.subject == subject)
        ]

    def one(self, event_type: str, subject: str | None = None) -> Event[Any]:
        found = self.of_type(event_type, subject)
        assert len(found) == 1, f"expected one {event_type} for {subject}, got {found}"
        return found[0]

    def types_for(self, subject: str) -> list[str]:
        """The emitted event types about one subject, in the order they were seen."""
        return [event.type for event in self.emitted if event.subject == subject]
