"""What the API knows, built only from events: the catalog, orders and stock.

The API applies the events it emits itself in the transaction that stages them
(a client reads its own writes at once); when they come back from the broker the
inbox knows them, so nothing is applied twice.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.store import Transaction
from consumers.api.tables import orders, products, reservations, stock
from events import (
    EventData,
    InventoryAdjusted,
    InventoryReleased,
    InventoryReserved,
    OrderConfirmed,
    OrderCreated,
    OrderRejected,
    ProductUpserted,
    StockReceived,
)

D = TypeVar("D", bound=EventData)


class Apply(Protocol[D]):
    """How an event of class `D` changes what the API knows."""

    def __call__(self, tx: Transaction, event: Event[D], /) -> None: ...


# By type string, as the consumer and the API's own writes find them; filled by
# `projects`, which checks that each function takes the events of its class.
APPLIERS: dict[str, Apply[Any]] = {}


def projects(kind: type[D]) -> Callable[[Apply[D]], Apply[D]]:
    def register(apply: Apply[D]) -> Apply[D]:
        APPLIERS[kind.event_type] = apply
        return apply

    return register


@projects(ProductUpserted)
def product_upserted(tx: Transaction, event: Event[ProductUpserted]) -> None:
    data = event.data
    row = {
        "sku": data.sku,
        "unit_price": str(data.unit_price),
        "data": data.model_dump(mode="json"),
    }
    tx.execute(
        tx.insert(products)
        .values(row)
        .on_conflict_do_update(index_elements=[products.c.sku], set_=row)
    )


@projects(OrderCreated)
def order_created(tx: Transaction, event: Event[OrderCreated]) -> None:
    data = event.data
    lines = [line.model_dump(mode="json") for line in data.lines]
    total = sum((line.unit_price * line.quantity for line in data.lines), Decimal(0))
    tx.execute(
        tx.insert(orders)
        .values(
            order_id=data.order_id,
            status="pending",
            reason=None,
            lines=lines,
            total=str(total),
            currency=data.currency,
            correlation_id=event.correlationid,
        )
        # An order already rejected (its cancellation came first) keeps its status.
        .on_conflict_do_update(
            index_elements=[orders.c.order_id],
            set_={"lines": lines, "total": str(total), "currency": data.currency},
        )
    )


@projects(OrderConfirmed)
def order_confirmed(tx: Transaction, event: Event[OrderConfirmed]) -> None:
    order_id = event.data.order_id
    _set_status(tx, order_id, "confirmed", None)
    held = tx.execute(
        sa.select(reservations.c.lines).where(reservations.c.order_id == order_id)
    ).scalar()
    for line in held or []:
        _change_stock(tx, line["sku"], on_hand=-line["quantity"], reserved=-line["quantity"])
    tx.execute(sa.delete(reservations).where(reservations.c.order_id == order_id))


@projects(OrderRejected)
def order_rejected(tx: Transaction, event: Event[OrderRejected]) -> None:
    data = event.data
    if not _set_status(tx, data.order_id, "rejected", data.reason):
        # Rejected before it was seen here (a cancellation overtook it).
        tx.execute(
            tx.insert(orders)
            .values(
                order_id=data.order_id,
                status="rejected",
                reason=data.reason,
                lines=[],
                total="0",
                currency="XXX",
                correlation_id=event.correlationid,
            )
            .on_conflict_do_nothing(index_elements=[orders.c.order_id])
        )


@projects(StockReceived)
def stock_received(tx: Transaction, event: Event[StockReceived]) -> None:
    _change_stock(tx, event.data.sku, on_hand=event.data.quantity)


@projects(InventoryAdjusted)
def inventory_adjusted(tx: Transaction, event: Event[InventoryAdjusted]) -> None:
    data = event.data
    on_hand = tx.execute(sa.select(stock.c.on_hand).where(stock.c.sku == data.sku)).scalar() or 0
    if on_hand + data.delta < 0:
        return  # inventory refuses it (dead-lettered there): stock never goes below zero
    _change_stock(tx, data.sku, on_hand=data.delta)


@projects(InventoryReserved)
def inventory_reserved(tx: Transaction, event: Event[InventoryReserved]) -> None:
    data = event.data
    lines = [{"sku": line.sku, "quantity": line.quantity} for line in data.lines]
    inserted = tx.execute(
        tx.insert(reservations)
        .values(order_id=data.order_id, lines=lines)
        .on_conflict_do_nothing(index_elements=[reservations.c.order_id])
    )
    if inserted.rowcount:
        for line in data.lines:
            _change_stock(tx, line.sku, reserved=line.quantity)


@projects(InventoryReleased)
def inventory_released(tx: Transaction, event: Event[InventoryReleased]) -> None:
    data = event.data
    for line in data.lines:
        _change_stock(tx, line.sku, reserved=-line.quantity)
    tx.execute(sa.delete(reservations).where(reservations.c.order_id == data.order_id))


def _set_status(tx: Transaction, order_id: str, status: str, reason: str | None) -> bool:
    changed = tx.execute(
        sa.update(orders).where(orders.c.order_id == order_id).values(status=status, reason=reason)
    )
    return bool(changed.rowcount)


def _change_stock(tx: Transaction, sku: str, *, on_hand: int = 0, reserved: int = 0) -> None:
    tx.execute(
        tx.insert(stock)
        .values(sku=sku, on_hand=max(on_hand, 0), reserved=max(reserved, 0))
        .on_conflict_do_update(
            index_elements=[stock.c.sku],
            set_={
                "on_hand": stock.c.on_hand + on_hand,
                "reserved": stock.c.reserved + reserved,
            },
        )
    )


# -- reads ------------------------------------------------------------------------------


def prices(connection: sa.Connection, skus: list[str]) -> dict[str, Decimal]:
    rows = connection.execute(
        sa.select(products.c.sku, products.c.unit_price).where(products.c.sku.in_(skus))
    )
    return {row.sku: Decimal(row.unit_price) for row in rows}


def order(connection: sa.Connection, order_id: str) -> dict[str, Any] | None:
    row = connection.execute(sa.select(orders).where(orders.c.order_id == order_id)).mappings()
    found = row.first()
    return None if found is None else dict(found)


def inventory(connection: sa.Connection, sku: str) -> dict[str, int] | None:
    row = connection.execute(sa.select(stock).where(stock.c.sku == sku)).first()
    if row is not None:
        return {"on_hand": row.on_hand, "reserved": row.reserved}
    known = connection.execute(sa.select(products.c.sku).where(products.c.sku == sku)).first()
    # A product in the catalog with no stock events has none.
    return None if known is None else {"on_hand": 0, "reserved": 0}
