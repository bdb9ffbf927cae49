"""The orders service: the life cycle of an order as a choreographed saga.

pending -> confirmed (payment authorized) or rejected with a reason: out_of_stock,
payment_failed, cancelled or invalid; confirmed -> refunded (reason cancelled) when
shipping refunds a cancellation that reached it before the shipment was prepared.
It is the one place that decides an order's outcome up to confirmation; inventory
commits or releases by following that decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.service import Context, Service
from agentbus.store import Migration, StoreBinding, Transaction
from events import (
    InventoryReservationFailed,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderRejected,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
)

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "orders"
metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(40), nullable=True),
    sa.Column("customer_id", sa.String(200), nullable=True),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("customer_id", sa.String(200), nullable=True),
    )


MIGRATIONS = (Migration(NAME, 1, "orders", _v1),)


def build() -> Service:
    service = Service(
        NAME,
        rebuildable=True,
        description="Order life cycle: pending, then confirmed or rejected with a reason.",
        publishes=("order.confirmed", "order.rejected"),
    )
    store = StoreBinding(service, MIGRATIONS)

    @store.applies(OrderCreated)
    def created(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
        data = event.data
        if status_of(tx, data.order_id) is not None:
            # Cancelled, or decided, before it arrived: it stays as it is.
            tx.connection.execute(
                _UPDATE.where(orders.c.customer_id.is_(None)),
                {"order": data.order_id, "customer_id": data.customer_id},
            )
            return
        skus = [line.sku for line in data.lines]
        if len(set(skus)) != len(skus):
            insert(tx, data.order_id, "rejected", "invalid", data.customer_id)
            ctx.emit(OrderRejected(order_id=data.order_id, reason="invalid"), cause=event)
            return
        insert(tx, data.order_id, "pending", None, data.customer_id)

    @store.applies(InventoryReservationFailed)
    def short(tx: Transaction, event: Event[InventoryReservationFailed], ctx: Context) -> None:
        reject_if_pending(tx, event, ctx, event.data.order_id, "out_of_stock")

    @store.applies(PaymentFailed)
    def payment_failed(tx: Transaction, event: Event[PaymentFailed], ctx: Context) -> None:
        reject_if_pending(tx, event, ctx, event.data.order_id, "payment_failed")

    @store.applies(OrderCancelled)
    def cancelled(tx: Transaction, event: Event[OrderCancelled], ctx: Context) -> None:
        data = event.data
        if status_of(tx, data.order_id) is None:
            # The cancellation overtook the order: remember it, so the order is
            # rejected when (if) it arrives and its stock is never held.
            insert(tx, data.order_id, "rejected", "cancelled", None)
            ctx.emit(OrderRejected(order_id=data.order_id, reason="cancelled"), cause=event)
            return
        reject_if_pending(tx, event, ctx, data.order_id, "cancelled")

    @store.applies(PaymentAuthorized)
    def authorized(tx: Transaction, event: Event[PaymentAuthorized], ctx: Context) -> None:
        data = event.data
        status = status_of(tx, data.order_id)
        if status is None:
            # Where event types travel apart (on Kafka, a topic each) the gateway's answer
            # can overtake the order it answers; it was caused by that order, so the
            # order exists. Dropped, it would leave the order pending for good; waited
            # for, it would hold the order's own subject behind it.
            insert(tx, data.order_id, "confirmed", None, None)
            ctx.emit(OrderConfirmed(order_id=data.order_id), cause=event)
            return
        if status != "pending":
            return
        update(tx, data.order_id, "confirmed", None)
        ctx.emit(OrderConfirmed(order_id=data.order_id), cause=event)

    @store.applies(PaymentRefunded)
    def refunded(tx: Transaction, event: Event[PaymentRefunded], ctx: Context) -> None:
        data = event.data
        # Shipping refunds only a cancellation of a confirmed order, so that is the reason.
        if status_of(tx, data.order_id) == "confirmed":
            update(tx, data.order_id, "refunded", "cancelled")

    return service


# Every event runs one or two of these: through the database's adapter, not
# SQLAlchemy's execution (with payments', a sixth of an offline replay's CPU).
_STATUS = [orders.c.status]
_NEW = [orders.c.order_id, orders.c.status, orders.c.reason, orders.c.customer_id]
_DECIDED = [orders.c.status, orders.c.reason]
_UPDATE = sa.update(orders).where(orders.c.order_id == sa.bindparam("order"))


def status_of(tx: Transaction, order_id: str) -> str | None:
    found = tx.rows(_STATUS, orders.c.order_id, [order_id])
    return str(found[0][0]) if found else None


def insert(
    tx: Transaction, order_id: str, status: str, reason: str | None, customer: str | None
) -> None:
    tx.add(_NEW, [(order_id, status, reason, customer)])


def update(tx: Transaction, order_id: str, status: str, reason: str | None) -> None:
    tx.update(orders.c.order_id, _DECIDED, [(order_id, status, reason)])


def reject_if_pending(
    tx: Transaction, event: Event[Any], ctx: Context, order_id: str, reason: str
) -> None:
    status = status_of(tx, order_id)
    if status is None:
        # The outcome overtook its order (see `authorized`): decided now.
        insert(tx, order_id, "rejected", reason, None)
        ctx.emit(OrderRejected(order_id=order_id, reason=reason), cause=event)
        return
    if status != "pending":
        return
    update(tx, order_id, "rejected", reason)
    ctx.emit(OrderRejected(order_id=order_id, reason=reason), cause=event)


def read_state(connection: sa.Connection) -> dict[str, dict[str, Any]]:
    """`agentbus state orders`: {order_id: {status, reason}}."""
    rows = connection.execute(sa.select(orders).order_by(orders.c.order_id))
    return {row.order_id: {"status": row.status, "reason": row.reason} for row in rows}
