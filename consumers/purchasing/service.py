"""Purchasing: an approved restock becomes exactly one purchase order.

The purchase order's id derives from the recommendation, and the service keeps
one row per recommendation: a second approval of the same recommendation (two
reviewers at once, a redelivery, a replay) creates nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.envelope import Event, derived_id
from agentbus.errors import TransientError
from agentbus.service import Context, Service
from agentbus.store import Migration, StoreBinding, Transaction
from events import ProductUpserted, PurchaseOrderCreated, RestockApproved

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "purchasing"
metadata = sa.MetaData()
suppliers = sa.Table(
    "suppliers",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("supplier", sa.String(300), nullable=False),
)
orders = sa.Table(
    "purchase_orders",
    metadata,
    sa.Column("recommendation_id", sa.String(200), primary_key=True),
    sa.Column("purchase_order_id", sa.String(200), nullable=False),
    sa.Column("sku", sa.String(100), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "suppliers",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("supplier", sa.String(300), nullable=False),
    )
    op.create_table(
        "purchase_orders",
        sa.Column("recommendation_id", sa.String(200), primary_key=True),
        sa.Column("purchase_order_id", sa.String(200), nullable=False),
        sa.Column("sku", sa.String(100), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
    )


MIGRATIONS = (Migration(NAME, 1, "suppliers and purchase orders", _v1),)


def build() -> Service:
    service = Service(
        NAME,
        rebuildable=True,
        description="Turns each approved restock into one purchase order.",
        publishes=("purchase_order.created",),
    )
    store = StoreBinding(service, MIGRATIONS)

    @store.applies(ProductUpserted)
    def product(tx: Transaction, event: Event[ProductUpserted], ctx: Context) -> None:
        tx.execute(
            tx.insert(suppliers)
            .values(sku=event.data.sku, supplier=event.data.supplier)
            .on_conflict_do_update(
                index_elements=[suppliers.c.sku], set_={"supplier": event.data.supplier}
            )
        )

    @store.applies(RestockApproved)
    def approved(tx: Transaction, event: Event[RestockApproved], ctx: Context) -> None:
        data = event.data
        supplier = tx.execute(
            sa.select(suppliers.c.supplier).where(suppliers.c.sku == data.sku)
        ).scalar()
        if supplier is None:
            raise TransientError(f"no supplier known for {data.sku} yet", code="unknown_sku")
        purchase_order_id = "PO-" + derived_id(NAME, data.recommendation_id)[:18]
        inserted = tx.execute(
            tx.insert(orders)
            .values(
                recommendation_id=data.recommendation_id,
                purchase_order_id=purchase_order_id,
                sku=data.sku,
                quantity=data.quantity,
            )
            .on_conflict_do_nothing()
        )
        if inserted.rowcount == 0:
            return  # this recommendation already has its purchase order
        ctx.emit(
            PurchaseOrderCreated(
                purchase_order_id=purchase_order_id,
                sku=data.sku,
                quantity=data.quantity,
                supplier=supplier,
                recommendation_id=data.recommendation_id,
            ),
            cause=event,
        )

    return service
