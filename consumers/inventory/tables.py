"""The inventory service's own tables, built only from events it consumed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.store import Migration

if TYPE_CHECKING:
    from agentbus.store import Operations

metadata = sa.MetaData()

products = sa.Table(
    "products",
    metadata,
    sa.Column("sku", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("category", sa.String(200), nullable=False),
    sa.Column("supplier", sa.String(200), nullable=False),
    sa.Column("reorder_point", sa.Integer, nullable=False),
    sa.Column("max_stock", sa.Integer, nullable=False),
    sa.Column("lead_time_days", sa.Integer, nullable=False),
)

stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.String(200), primary_key=True),
    sa.Column("on_hand", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
)

# One row per order: held -> committed (-> returned) | released; refused (rejected before it
# arrived) and failed (short) are final too.
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
)

reservation_lines = sa.Table(
    "reservation_lines",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("sku", sa.String(200), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("category", sa.String(200), nullable=False),
        sa.Column("supplier", sa.String(200), nullable=False),
        sa.Column("reorder_point", sa.Integer, nullable=False),
        sa.Column("max_stock", sa.Integer, nullable=False),
        sa.Column("lead_time_days", sa.Integer, nullable=False),
    )
    op.create_table(
        "stock",
        sa.Column("sku", sa.String(200), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
    )
    op.create_table(
        "reservation_lines",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("sku", sa.String(200), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
    )


MIGRATIONS = (Migration("inventory", 1, "products, stock and reservations", _v1),)
