"""The payments service: a simulated, deterministic gateway.

An order's total (sum of quantity x unit price) above the limit fails with
`limit_exceeded`; anything else is authorized. Payment is asked for once the
stock is reserved.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.environment import load_environment
from agentbus.service import Context, Service
from agentbus.store import Migration, StoreBinding, Transaction
from events import InventoryReserved, OrderCreated, PaymentAuthorized, PaymentFailed

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "payments"
CENT = Decimal("0.01")

metadata = sa.MetaData()
amounts = sa.Table(
    "order_amounts",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=True),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "order_amounts",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
    )


# A reservation that overtook its order (on Kafka each event type has its topic): the
# payment is asked for when the order arrives. Waiting in place instead would hold the
# order's own subject behind the wait, until the retries ran out.
early = sa.Table(
    "early_reservations",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
)


def _v2(op: Operations) -> None:
    op.create_table("early_reservations", sa.Column("order_id", sa.String(200), primary_key=True))


MIGRATIONS = (
    Migration(NAME, 1, "order amounts and outcomes", _v1),
    Migration(NAME, 2, "reservations ahead of their order", _v2),
)


def order_total(lines: list[tuple[int, Decimal]]) -> Decimal:
    return sum((Decimal(quantity) * price for quantity, price in lines), Decimal(0)).quantize(CENT)


def limit_from_env() -> Decimal:
    """`PAYMENT_LIMIT`: the simulated gateway's limit."""
    return load_environment().payment_limit


def build(limit: Decimal | None = None) -> Service:
    cap = limit_from_env() if limit is None else limit
    service = Service(
        NAME,
        rebuildable=True,
        description=f"Simulated gateway: totals above {cap} fail with limit_exceeded.",
        publishes=("payment.authorized", "payment.failed"),
    )
    store = StoreBinding(service, MIGRATIONS)

    def decide(tx: Transaction, ctx: Context, order_id: str, cause: Event[Any]) -> None:
        found = tx.rows(_CHARGE, amounts.c.order_id, [order_id])
        if not found:
            return
        stored, currency, outcome = found[0]
        if outcome is not None:
            return  # one payment per order
        amount = Decimal(stored).quantize(CENT)
        if amount > cap:
            outcome = "failed"
            ctx.emit(
                PaymentFailed(
                    order_id=order_id,
                    amount=amount,
                    currency=currency,
                    reason="limit_exceeded",
                ),
                cause=cause,
            )
        else:
            outcome = "authorized"
            ctx.emit(
                PaymentAuthorized(order_id=order_id, amount=amount, currency=currency),
                cause=cause,
            )
        tx.update(amounts.c.order_id, [amounts.c.outcome], [(order_id, outcome)])

    @store.applies(OrderCreated)
    def created(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
        data = event.data
        total = order_total([(line.quantity, line.unit_price) for line in data.lines])
        tx.add(_AMOUNT, [(data.order_id, total, data.currency)], skip_existing=True)
        if tx.rows(_EARLY, early.c.order_id, [data.order_id]):
            tx.remove(early.c.order_id, [data.order_id])
            decide(tx, ctx, data.order_id, event)

    @store.applies(InventoryReserved)
    def reserved(tx: Transaction, event: Event[InventoryReserved], ctx: Context) -> None:
        data = event.data
        if not tx.rows(_ORDER, amounts.c.order_id, [data.order_id]):
            tx.add(_EARLY, [(data.order_id,)], skip_existing=True)
            return
        decide(tx, ctx, data.order_id, event)

    return service


# Every order runs these: through the database's adapter, not SQLAlchemy's execution
# (with orders', a sixth of an offline replay's CPU).
_CHARGE = [amounts.c.amount, amounts.c.currency, amounts.c.outcome]
_AMOUNT = [amounts.c.order_id, amounts.c.amount, amounts.c.currency]
_ORDER = [amounts.c.order_id]
_EARLY = [early.c.order_id]
