"""The substitute agent's own projection: the catalog, stock available, and what
each order asked for and could not get, built only from events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.service import Context
from agentbus.store import Migration, StoreBinding, Transaction
from events import (
    InventoryAdjusted,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ProductUpserted,
    StockReceived,
)

if TYPE_CHECKING:
    from agentbus.store import Operations

metadata = sa.MetaData()

products = sa.Table(
    "substitute_products",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("category", sa.String(300), nullable=False),
    sa.Column("unit_price", sa.Float, nullable=False),
)

# What can be sold now: received, adjusted, less reserved, plus released.
stock = sa.Table(
    "substitute_stock",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("available", sa.Integer, nullable=False),
)

shortages = sa.Table(
    "substitute_shortages",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("requested", sa.Integer, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "substitute_products",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.String(300), nullable=False),
        sa.Column("unit_price", sa.Float, nullable=False),
    )
    op.create_table(
        "substitute_stock",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("available", sa.Integer, nullable=False),
    )
    op.create_table(
        "substitute_shortages",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("available", sa.Integer, nullable=False),
    )


MIGRATIONS = (
    Migration("substitute", 1, "catalog, stock and shortages seen by the substitute agent", _v1),
)


def _add_stock(tx: Transaction, sku: str, delta: int) -> None:
    tx.execute(
        tx.insert(stock)
        .values(sku=sku, available=delta)
        .on_conflict_do_update(
            index_elements=[stock.c.sku], set_={"available": stock.c.available + delta}
        )
    )


def project(store: StoreBinding) -> None:
    @store.applies(ProductUpserted)
    def product(tx: Transaction, event: Event[ProductUpserted], ctx: Context) -> None:
        data = event.data
        row = {
            "name": data.name,
            "description": data.description,
            "category": data.category,
            "unit_price": float(data.unit_price),
        }
        tx.execute(
            tx.insert(products)
            .values(sku=data.sku, **row)
            .on_conflict_do_update(index_elements=[products.c.sku], set_=row)
        )

    @store.applies(StockReceived)
    def received(tx: Transaction, event: Event[StockReceived], ctx: Context) -> None:
        _add_stock(tx, event.data.sku, event.data.quantity)

    @store.applies(InventoryAdjusted)
    def adjusted(tx: Transaction, event: Event[InventoryAdjusted], ctx: Context) -> None:
        _add_stock(tx, event.data.sku, event.data.delta)

    @store.applies(InventoryReserved)
    def reserved(tx: Transaction, event: Event[InventoryReserved], ctx: Context) -> None:
        for line in event.data.lines:
            _add_stock(tx, line.sku, -line.quantity)

    @store.applies(InventoryReleased)
    def released(tx: Transaction, event: Event[InventoryReleased], ctx: Context) -> None:
        for line in event.data.lines:
            _add_stock(tx, line.sku, line.quantity)

    @store.applies(InventoryReservationFailed)
    def short(tx: Transaction, event: Event[InventoryReservationFailed], ctx: Context) -> None:
        for shortage in event.data.shortages:
            tx.execute(
                tx.insert(shortages)
                .values(
                    order_id=event.data.order_id,
                    sku=shortage.sku,
                    requested=shortage.requested,
                    available=shortage.available,
                )
                .on_conflict_do_nothing()
            )
