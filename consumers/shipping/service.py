"""The shipping service: a confirmed order is prepared for shipment after a handling
delay, unless a cancellation reaches this service first.

This service is where a cancellation after confirmation is decided, because it alone
knows whether the shipment has been prepared: the decision and the preparation both
change the order's row here, one transaction at a time. It emits the outcome:
`payment.refunded` (inventory returns the stock and orders marks the order refunded
on it) or `order.cancellation_refused`. A cancellation before confirmation is the
orders service's (it rejects the order); one that arrives here ahead of the
confirmation is kept, so that the confirmation, if orders gives it, refunds at once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from agentbus.envelope import Event, derived_id
from agentbus.environment import load_environment
from agentbus.errors import TransientError
from agentbus.service import Context, Service
from agentbus.store import StoreBinding, Transaction
from consumers.shipping.scheduler import ShipmentScheduler
from consumers.shipping.tables import MIGRATIONS, shipments
from events import (
    InventoryReserved,
    OrderCancellationRefused,
    OrderCancelled,
    OrderConfirmed,
    PaymentAuthorized,
    PaymentRefunded,
    ShipmentPrepared,
)

NAME = "shipping"
REFUND_REASON = "cancelled"


def delay_from_env() -> float:
    """`AGENTBUS_SHIPPING_DELAY_S`: seconds from confirmation to shipment."""
    return load_environment().shipping_delay_s


def build(delay: float | None = None) -> Service:
    handling = timedelta(seconds=delay_from_env() if delay is None else delay)
    service = Service(
        NAME,
        rebuildable=True,
        description=f"Prepares confirmed orders for shipment after {handling.total_seconds():g}s; "
        "refunds a cancellation that comes first, refuses one that comes later.",
        publishes=("shipment.prepared", "payment.refunded", "order.cancellation_refused"),
    )
    store = StoreBinding(service, MIGRATIONS)
    scheduler = ShipmentScheduler(store, NAME)
    store.after_commit(scheduler.wake)
    service.on_startup(scheduler.start)
    service.on_shutdown(scheduler.stop)
    service.idle_checks.append(scheduler.idle)

    @store.applies(InventoryReserved)
    def reserved(tx: Transaction, event: Event[InventoryReserved], ctx: Context) -> None:
        data = event.data
        lines = [[line.sku, line.quantity] for line in data.lines]
        ensure_row(tx, data.order_id)
        tx.execute(_SET, {"order": data.order_id, "lines": json.dumps(lines)})

    @store.applies(PaymentAuthorized)
    def authorized(tx: Transaction, event: Event[PaymentAuthorized], ctx: Context) -> None:
        data = event.data
        ensure_row(tx, data.order_id)
        tx.execute(_SET, {"order": data.order_id, "amount": data.amount, "currency": data.currency})

    @store.applies(OrderConfirmed)
    def confirmed(tx: Transaction, event: Event[OrderConfirmed], ctx: Context) -> None:
        order_id = event.data.order_id
        ensure_row(tx, order_id)
        row = locked_row(tx, order_id)
        if row.lines is None or row.amount is None:
            # Its reservation and payment come before it; a retry let it overtake them.
            raise TransientError(
                f"order {order_id} confirmed before its reservation or payment was seen",
                code="order_incomplete",
            )
        if row.status == "open":
            tx.execute(
                _SET,
                {
                    "order": order_id,
                    "status": "scheduled",
                    "shipment_id": derived_id(NAME, event.id, "shipment"),
                    "due_at": datetime.now(UTC) + handling,
                    "cause": tx.codec.encode(event),
                },
            )
        elif row.status == "cancelled":
            # Orders confirmed before it saw the cancellation, which reached us first:
            # the shipment never starts, and the refund answers that cancellation.
            refund(tx, ctx, row, tx.codec.decode(row.cause))

    @store.applies(OrderCancelled)
    def cancelled(tx: Transaction, event: Event[OrderCancelled], ctx: Context) -> None:
        order_id = event.data.order_id
        ensure_row(tx, order_id)
        row = locked_row(tx, order_id)
        if row.status == "open":
            tx.execute(
                _SET, {"order": order_id, "status": "cancelled", "cause": tx.codec.encode(event)}
            )
        elif row.status == "scheduled":
            refund(tx, ctx, row, event)
        elif row.status == "prepared":
            ctx.emit(OrderCancellationRefused(order_id=order_id, reason="shipped"), cause=event)
        # refunded, or cancelled already: a second cancellation has nothing left to stop

    @store.applies(ShipmentPrepared)
    def prepared(tx: Transaction, event: Event[ShipmentPrepared], ctx: Context) -> None:
        # Our own decision coming back: nothing to do live (the row says prepared
        # already), but a rebuild from a recording learns it only from here.
        tx.execute(
            sa.update(shipments)
            .where(shipments.c.order_id == event.data.order_id)
            .where(shipments.c.status == "scheduled")
            .values(status="prepared")
        )

    return service


_SET = sa.update(shipments).where(shipments.c.order_id == sa.bindparam("order"))


def ensure_row(tx: Transaction, order_id: str) -> None:
    tx.execute(
        tx.insert(shipments)
        .values(order_id=order_id, status="open")
        .on_conflict_do_nothing(index_elements=[shipments.c.order_id])
    )


def locked_row(tx: Transaction, order_id: str) -> Any:
    # The scheduler takes due rows with the same lock: a cancellation and the
    # preparation of one order never both go ahead.
    query = tx.locked(sa.select(shipments).where(shipments.c.order_id == order_id))
    return tx.execute(query).one()


def refund(tx: Transaction, ctx: Context, row: Any, cancellation: Event[OrderCancelled]) -> None:
    if row.amount is None:
        raise TransientError(
            f"order {row.order_id}: no authorized payment seen to refund", code="payment_unknown"
        )
    tx.execute(_SET, {"order": row.order_id, "status": "refunded", "due_at": None})
    ctx.emit(
        PaymentRefunded(
            order_id=row.order_id,
            amount=Decimal(row.amount).quantize(Decimal("0.01")),
            currency=row.currency,
            reason=REFUND_REASON,
        ),
        cause=cancellation,
    )


def read_state(connection: sa.Connection) -> dict[str, dict[str, Any]]:
    """`agentbus state shipping`: {order_id: {status, shipment_id}}."""
    rows = connection.execute(
        sa.select(shipments.c.order_id, shipments.c.status, shipments.c.shipment_id).order_by(
            shipments.c.order_id
        )
    )
    return {row.order_id: {"status": row.status, "shipment_id": row.shipment_id} for row in rows}
