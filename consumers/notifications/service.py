"""The notifications service: emails for order outcomes, shipments and refunds, and for
every suggestion.

Applying an event writes its email into the service's own table, keyed by the
event id, in the transaction that claims the event in the inbox: a redelivered
event is skipped there and adds nothing. A sender then sends what is unsent and
marks it sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.environment import Environment, load_environment
from agentbus.errors import AgentbusError
from agentbus.service import Context, Service, ServiceEnv
from agentbus.store import Migration, StoreBinding, Transaction
from agentbus.wake_loop import Round, WakeLoop
from consumers.notifications.mailer import Email, FolderMailer, Mailer, SmtpMailer
from events import (
    OrderConfirmed,
    OrderCreated,
    OrderRejected,
    PaymentRefunded,
    RestockRecommended,
    ShipmentPrepared,
    SubstituteSuggested,
)

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "notifications"
# What a customer hears about, and what reviewers hear about.
OrderNews = OrderConfirmed | OrderRejected | ShipmentPrepared | PaymentRefunded
Suggestion = RestockRecommended | SubstituteSuggested
ORDER_NEWS = tuple(
    kind.event_type for kind in (OrderConfirmed, OrderRejected, ShipmentPrepared, PaymentRefunded)
)
log = logging.getLogger(__name__)

metadata = sa.MetaData()
emails = sa.Table(
    "emails",
    metadata,
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.String(500), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
)
order_customers = sa.Table(
    "order_customers",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("customer_id", sa.String(200), nullable=False),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "emails",
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "order_customers",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
    )


MIGRATIONS = (Migration(NAME, 1, "emails to send, customers of orders", _v1),)


@dataclass(frozen=True)
class Addresses:
    """Who mail goes to, and the console's address for links: read when the service is built."""

    customer_template: str
    reviewers: str
    console_url: str

    @classmethod
    def of(cls, environment: Environment) -> Addresses:
        return cls(
            environment.customer_email_template,
            environment.reviewers_email,
            environment.review_public_url.rstrip("/"),
        )

    def customer(self, customer_id: str) -> str:
        return self.customer_template.format(customer_id=customer_id)


def mailer_from_env(data_dir: Path) -> Mailer:
    environment = load_environment()
    url = environment.secret("smtp_url")
    if url:
        return SmtpMailer(url, environment.mail_from)
    return FolderMailer(data_dir / "mail", environment.mail_from)


def build(mailer: Mailer | None = None) -> Service:
    service = Service(
        NAME,
        rebuildable=True,
        description="Emails customers about their orders and reviewers about suggestions.",
    )
    store = StoreBinding(service, MIGRATIONS)
    sender = Sender(store, mailer)
    addresses = Addresses.of(load_environment())
    store.after_commit(sender.wake)
    service.on_startup(sender.start)
    service.on_shutdown(sender.stop)

    @store.applies(OrderCreated)
    def order_created(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
        tx.connection.execute(
            tx.insert(order_customers)
            .values(order_id=event.data.order_id, customer_id=event.data.customer_id)
            .on_conflict_do_nothing(index_elements=[order_customers.c.order_id])
        )

    @store.applies(OrderConfirmed, OrderRejected, ShipmentPrepared, PaymentRefunded)
    def order_news(tx: Transaction, event: Event[OrderNews], ctx: Context) -> None:
        order_id = event.data.order_id
        row = (
            tx.connection.execute(
                sa.select(order_customers.c.customer_id).where(
                    order_customers.c.order_id == order_id
                )
            )
        ).first()
        if row is None:
            return  # cancelled before it was placed: no customer to write to
        subject, body = order_email(event.data)
        queue_email(tx, Email(event.id, addresses.customer(row.customer_id), subject, body))

    @store.applies(RestockRecommended, SubstituteSuggested)
    def suggestion(tx: Transaction, event: Event[Suggestion], ctx: Context) -> None:
        queue_email(tx, suggestion_email(event, addresses))

    return service


def order_email(data: OrderNews) -> tuple[str, str]:
    """Subject and body of what a customer is told about their order."""
    order_id = data.order_id
    match data:
        case OrderConfirmed():
            return (
                f"Your order {order_id} is confirmed",
                f"Thank you. Order {order_id} is confirmed and will be shipped.",
            )
        case OrderRejected():
            return (
                f"Your order {order_id} could not be completed",
                f"Order {order_id} was not completed (reason: {data.reason}).",
            )
        case ShipmentPrepared():
            items = ", ".join(f"{line.quantity} x {line.sku}" for line in data.lines)
            return (
                f"Your order {order_id} is ready to ship",
                f"Order {order_id} has been prepared for shipment {data.shipment_id}: {items}.",
            )
        case PaymentRefunded():
            return (
                f"Your order {order_id} is refunded",
                f"Order {order_id} was cancelled before it shipped; "
                f"{data.amount:.2f} {data.currency} has been refunded.",
            )


def suggestion_email(event: Event[Suggestion], addresses: Addresses) -> Email:
    data = event.data
    match data:
        case RestockRecommended():
            suggestion_id = data.recommendation_id
            subject = f"Restock suggested: {data.quantity} x {data.sku} ({data.urgency})"
            body = (
                f"{data.agent} suggests ordering {data.quantity} of {data.sku}.\n"
                f"Urgency: {data.urgency}; confidence {data.confidence:.2f}.\n\n"
                f"Rationale (written by a model; check it):\n{data.rationale}\n\n"
                f"Recommendation {data.recommendation_id}."
            )
        case SubstituteSuggested():
            suggestion_id = data.suggestion_id
            names = ", ".join(s.sku for s in data.substitutes) or "none"
            subject = f"Substitutes suggested for {data.sku} in order {data.order_id}"
            body = f"{data.agent} suggests: {names}.\n\n{data.message}"
    console = addresses.console_url
    if console:
        body += f"\n\nReview it: {console}/suggestions/{suggestion_id}"
    return Email(event.id, addresses.reviewers, subject, body)


def queue_email(tx: Transaction, email: Email) -> None:
    tx.connection.execute(
        tx.insert(emails)
        .values(
            key=email.key,
            recipient=email.to,
            subject=email.subject,
            body=email.body,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=[emails.c.key])
    )


class Sender:
    """Sends unsent emails in the order they were queued; retries later on failure."""

    def __init__(self, store: StoreBinding, mailer: Mailer | None, *, poll: float = 2.0) -> None:
        self.store = store
        self.mailer = mailer
        self.poll = poll
        self.sent = 0
        self._loop = WakeLoop(
            self._round,
            name="notifications",
            idle=poll,
            backoff=poll,
            max_backoff=poll,
            retry_on=(AgentbusError, OSError, sa.exc.SQLAlchemyError),
        )

    def wake(self) -> None:
        self._loop.wake()

    async def start(self, env: ServiceEnv) -> None:
        if env.settings.rebuilding:
            return  # the emails are state to rebuild, not mail to send again
        if self.mailer is None:
            self.mailer = mailer_from_env(env.settings.data_dir)
        self._loop.start()

    async def stop(self) -> None:
        if not self._loop.running:
            return  # never started (a rebuild): nothing may be sent
        await self._loop.stop()
        await self._loop.drain()  # what was queued before the stop goes out with it

    async def _round(self) -> Round:
        await self.send_pending()
        return Round.DONE

    async def send_pending(self, limit: int = 100) -> int:
        assert self.mailer is not None
        database = self.store.database
        unsent = (
            sa.select(emails)
            .where(emails.c.sent_at.is_(None))
            .order_by(emails.c.created_at, emails.c.key)
            .limit(limit)
        )

        def fetch(connection: sa.Connection) -> list[Any]:
            return list(connection.execute(unsent).all())

        rows = await database.read(fetch)
        count = 0
        for row in rows:
            await self.mailer.send(Email(row.key, row.recipient, row.subject, row.body))
            await database.run(_marker(row.key))
            count += 1
        self.sent += count
        return count


def _marker(key: str) -> Callable[[Transaction], object]:
    def mark(tx: Transaction) -> object:
        return tx.execute(
            sa.update(emails).where(emails.c.key == key).values(sent_at=datetime.now(UTC))
        )

    return mark
