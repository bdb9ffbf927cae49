"""The inventory service: catalog, stock, reservations and low-stock signals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.errors import PermanentError
from agentbus.service import Context, Service
from agentbus.store import StoreBinding, Transaction
from consumers.inventory import domain
from consumers.inventory.tables import MIGRATIONS, products, reservation_lines, reservations, stock
from events import (
    InventoryAdjusted,
    InventoryLow,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderConfirmed,
    OrderCreated,
    OrderRejected,
    ProductUpserted,
    StockReceived,
)

NAME = "inventory"


def build() -> Service:
    service = Service(
        NAME,
        description="Stock per SKU, all-or-nothing reservations, low-stock signals.",
        # Reservations read stock of several SKUs: apply in the queue's order, in
        # batches, so that outcomes follow the order events were published in.
        max_concurrency=1,
        publishes=(
            "inventory.reserved",
            "inventory.reservation_failed",
            "inventory.released",
            "inventory.low",
        ),
    )
    store = StoreBinding(service, MIGRATIONS)

    @store.applies("product.upserted")
    async def product_upserted(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: ProductUpserted = event.data
        row = {
            "name": data.name,
            "category": data.category,
            "supplier": data.supplier,
            "reorder_point": data.reorder_point,
            "max_stock": data.max_stock,
            "lead_time_days": data.lead_time_days,
        }
        await tx.connection.execute(
            tx.insert(products)
            .values(sku=data.sku, **row)
            .on_conflict_do_update(index_elements=[products.c.sku], set_=row)
        )

    @store.applies("stock.received")
    async def stock_received(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: StockReceived = event.data
        await change_on_hand(tx, event, ctx, data.sku, data.quantity)

    @store.applies("inventory.adjusted")
    async def inventory_adjusted(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: InventoryAdjusted = event.data
        await change_on_hand(tx, event, ctx, data.sku, data.delta)

    @store.applies("order.created")
    async def order_created(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: OrderCreated = event.data
        if await reservation_status(tx, data.order_id) is not None:
            return  # rejected before it arrived, or a second order under the same id
        wanted = domain.merge_lines([(line.sku, line.quantity) for line in data.lines])
        levels = await lock_levels(tx, wanted)
        short = domain.shortages(levels, wanted)
        if short:
            await tx.connection.execute(
                sa.insert(reservations).values(order_id=data.order_id, status="failed")
            )
            ctx.emit(
                InventoryReservationFailed(
                    order_id=data.order_id,
                    shortages=[
                        {"sku": s.sku, "requested": s.requested, "available": s.available}
                        for s in short
                    ],
                ),
                cause=event,
            )
            return
        for sku, quantity in wanted.items():
            await tx.connection.execute(
                sa.update(stock)
                .where(stock.c.sku == sku)
                .values(reserved=stock.c.reserved + quantity)
            )
        await tx.connection.execute(
            sa.insert(reservations).values(order_id=data.order_id, status="held")
        )
        await tx.connection.execute(
            sa.insert(reservation_lines),
            [{"order_id": data.order_id, "sku": s, "quantity": q} for s, q in wanted.items()],
        )
        ctx.emit(
            InventoryReserved(
                order_id=data.order_id,
                lines=[{"sku": s, "quantity": q} for s, q in wanted.items()],
            ),
            cause=event,
        )
        for sku, quantity in wanted.items():
            before = levels[sku].available
            await signal_if_low(tx, event, ctx, sku, before, before - quantity)

    @store.applies("order.confirmed")
    async def order_confirmed(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: OrderConfirmed = event.data
        if await reservation_status(tx, data.order_id) != "held":
            return
        for sku, quantity in await reserved_lines(tx, data.order_id):
            # Committing takes the goods: on_hand and reserved drop together, so
            # available does not move.
            await tx.connection.execute(
                sa.update(stock)
                .where(stock.c.sku == sku)
                .values(
                    on_hand=sa.func.max(stock.c.on_hand - quantity, 0)
                    if tx.dialect == "sqlite"
                    else sa.func.greatest(stock.c.on_hand - quantity, 0),
                    reserved=stock.c.reserved - quantity,
                )
            )
        await set_status(tx, data.order_id, "committed")

    @store.applies("order.rejected")
    async def order_rejected(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        data: OrderRejected = event.data
        status = await reservation_status(tx, data.order_id)
        if status is None:
            # Rejected (cancelled) before the order reached us: never reserve it.
            await tx.connection.execute(
                sa.insert(reservations).values(order_id=data.order_id, status="refused")
            )
            return
        if status != "held":
            return
        lines = await reserved_lines(tx, data.order_id)
        for sku, quantity in lines:
            await tx.connection.execute(
                sa.update(stock)
                .where(stock.c.sku == sku)
                .values(reserved=stock.c.reserved - quantity)
            )
        await set_status(tx, data.order_id, "released")
        ctx.emit(
            InventoryReleased(
                order_id=data.order_id, lines=[{"sku": s, "quantity": q} for s, q in lines]
            ),
            cause=event,
        )

    return service


async def change_on_hand(
    tx: Transaction, event: Event[Any], ctx: Context, sku: str, delta: int
) -> None:
    level = (await lock_levels(tx, [sku]))[sku]
    if level.on_hand + delta < 0:
        raise PermanentError(
            f"{sku}: on_hand {level.on_hand} {delta:+d} would go below zero",
            code="negative_stock",
        )
    await tx.connection.execute(
        sa.update(stock).where(stock.c.sku == sku).values(on_hand=stock.c.on_hand + delta)
    )
    await signal_if_low(tx, event, ctx, sku, level.available, level.available + delta)


async def lock_levels(tx: Transaction, skus: Iterable[str]) -> dict[str, domain.Level]:
    """Stock rows of the SKUs, created if missing, locked until commit.

    Rows are locked in SKU order so that two transactions over the same SKUs can
    never deadlock; on SQLite the whole write transaction is already exclusive.
    """
    ordered = sorted(set(skus))
    await tx.connection.execute(
        tx.insert(stock)
        .values([{"sku": sku, "on_hand": 0, "reserved": 0} for sku in ordered])
        .on_conflict_do_nothing(index_elements=[stock.c.sku])
    )
    query = sa.select(stock).where(stock.c.sku.in_(ordered)).order_by(stock.c.sku)
    if tx.dialect == "postgresql":
        query = query.with_for_update()
    rows = (await tx.connection.execute(query)).all()
    return {row.sku: domain.Level(row.on_hand, row.reserved) for row in rows}


async def signal_if_low(
    tx: Transaction, event: Event[Any], ctx: Context, sku: str, before: int, after: int
) -> None:
    row = (await tx.connection.execute(sa.select(products).where(products.c.sku == sku))).first()
    if row is None or not domain.crossed_low(before, after, row.reorder_point):
        return
    level = (await tx.connection.execute(sa.select(stock).where(stock.c.sku == sku))).one()
    ctx.emit(
        InventoryLow(
            sku=sku,
            available=level.on_hand - level.reserved,
            on_hand=level.on_hand,
            reserved=level.reserved,
            reorder_point=row.reorder_point,
            max_stock=row.max_stock,
            lead_time_days=row.lead_time_days,
        ),
        cause=event,
    )


async def reservation_status(tx: Transaction, order_id: str) -> str | None:
    row = (
        await tx.connection.execute(
            sa.select(reservations.c.status).where(reservations.c.order_id == order_id)
        )
    ).first()
    return None if row is None else str(row.status)


async def set_status(tx: Transaction, order_id: str, status: str) -> None:
    await tx.connection.execute(
        sa.update(reservations).where(reservations.c.order_id == order_id).values(status=status)
    )


async def reserved_lines(tx: Transaction, order_id: str) -> list[tuple[str, int]]:
    rows = await tx.connection.execute(
        sa.select(reservation_lines.c.sku, reservation_lines.c.quantity)
        .where(reservation_lines.c.order_id == order_id)
        .order_by(reservation_lines.c.sku)
    )
    return [(row.sku, row.quantity) for row in rows]


async def read_state(connection: Any) -> dict[str, dict[str, int]]:
    """`agentbus state inventory`: {sku: {on_hand, reserved, available}} for every known SKU."""
    known = sa.union(sa.select(products.c.sku), sa.select(stock.c.sku)).subquery()
    rows = await connection.execute(
        sa.select(known.c.sku, stock.c.on_hand, stock.c.reserved)
        .select_from(known.outerjoin(stock, stock.c.sku == known.c.sku))
        .order_by(known.c.sku)
    )
    state: dict[str, dict[str, int]] = {}
    for row in rows:
        on_hand = row.on_hand or 0
        reserved = row.reserved or 0
        state[row.sku] = {"on_hand": on_hand, "reserved": reserved, "available": on_hand - reserved}
    return state
