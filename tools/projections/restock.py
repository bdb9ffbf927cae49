"""The restock agent's own projection, built from events: what its tools read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.service import Context
from agentbus.store import Migration, StoreBinding, Transaction
from events import OrderCreated, ProductUpserted, PurchaseOrderCreated, StockReceived

if TYPE_CHECKING:
    from agentbus.store import Operations

metadata = sa.MetaData()

products = sa.Table(
    "restock_products",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("category", sa.String(300), nullable=False),
    sa.Column("supplier", sa.String(300), nullable=False),
    sa.Column("lead_time_days", sa.Integer, nullable=False),
    sa.Column("reorder_point", sa.Integer, nullable=False),
    sa.Column("max_stock", sa.Integer, nullable=False),
)

# Demand is what customers asked for, lost sales included: order lines as placed.
demand = sa.Table(
    "restock_demand",
    metadata,
    sa.Column("event_id", sa.String(256), primary_key=True),
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    # The price asked (the lowest of the order's lines): a cut price marks a promotion.
    sa.Column("unit_price", sa.Float, nullable=True),
)

purchase_orders = sa.Table(
    "restock_purchase_orders",
    metadata,
    sa.Column("purchase_order_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(256), nullable=False),
    sa.Column("sku", sa.String(100), nullable=False, index=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "restock_products",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.String(300), nullable=False),
        sa.Column("supplier", sa.String(300), nullable=False),
        sa.Column("lead_time_days", sa.Integer, nullable=False),
        sa.Column("reorder_point", sa.Integer, nullable=False),
        sa.Column("max_stock", sa.Integer, nullable=False),
    )
    op.create_table(
        "restock_demand",
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_restock_demand_at", "restock_demand", ["at"])
    op.create_table(
        "restock_purchase_orders",
        sa.Column("purchase_order_id", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("sku", sa.String(100), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_restock_purchase_orders_sku", "restock_purchase_orders", ["sku"])


def _v2(op: Operations) -> None:
    op.add_column("restock_demand", sa.Column("unit_price", sa.Float, nullable=True))


MIGRATIONS = (
    Migration("restock", 1, "products, demand and purchase orders seen by the restock agent", _v1),
    Migration("restock", 2, "the price of each order line", _v2),
)


def project(store: StoreBinding) -> None:
    @store.applies(ProductUpserted)
    def product(tx: Transaction, event: Event[ProductUpserted], ctx: Context) -> None:
        data = event.data
        row = {
            "name": data.name,
            "description": data.description,
            "category": data.category,
            "supplier": data.supplier,
            "lead_time_days": data.lead_time_days,
            "reorder_point": data.reorder_point,
            "max_stock": data.max_stock,
        }
        tx.execute(
            tx.insert(products)
            .values(sku=data.sku, **row)
            .on_conflict_do_update(index_elements=[products.c.sku], set_=row)
        )

    @store.applies(OrderCreated)
    def order(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
        rows: dict[str, int] = {}
        prices: dict[str, float] = {}
        for line in event.data.lines:
            rows[line.sku] = rows.get(line.sku, 0) + line.quantity
            prices[line.sku] = min(prices.get(line.sku, float("inf")), float(line.unit_price))
        tx.add(
            _DEMAND,
            [(event.id, sku, quantity, event.time, prices[sku]) for sku, quantity in rows.items()],
            skip_existing=True,
        )

    @store.applies(PurchaseOrderCreated)
    def purchase_order(tx: Transaction, event: Event[PurchaseOrderCreated], ctx: Context) -> None:
        data = event.data
        tx.execute(
            tx.insert(purchase_orders)
            .values(
                purchase_order_id=data.purchase_order_id,
                event_id=event.id,
                sku=data.sku,
                quantity=data.quantity,
                created_at=event.time,
            )
            .on_conflict_do_nothing()
        )

    @store.applies(StockReceived)
    def received(tx: Transaction, event: Event[StockReceived], ctx: Context) -> None:
        if event.data.purchase_order_id is None:
            return
        tx.execute(_RECEIVED, {"order": event.data.purchase_order_id, "received_at": event.time})


# Every order adds its rows through the database's adapter, not SQLAlchemy's execution.
_DEMAND = [demand.c.event_id, demand.c.sku, demand.c.quantity, demand.c.at, demand.c.unit_price]
# Built once: every delivery runs one.
_RECEIVED = sa.update(purchase_orders).where(
    purchase_orders.c.purchase_order_id == sa.bindparam("order")
)
