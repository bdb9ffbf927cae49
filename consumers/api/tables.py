"""The API's own database: its projections of the events and its idempotency keys.

Beside them it keeps the review read model's suggestions and audit log, so that
suggestions are decided here as in the console.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.store import Migration
from consumers.review import readmodel

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "api"
metadata = sa.MetaData()

# The catalog, as `product.upserted` says: orders are priced from it.
products = sa.Table(
    "api_products",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    # Decimal text: exact on every database.
    sa.Column("unit_price", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)

orders = sa.Table(
    "api_orders",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(50), nullable=True),
    sa.Column("lines", sa.JSON, nullable=False),  # [{sku, quantity, unit_price}]
    sa.Column("total", sa.String(32), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("correlation_id", sa.String(256), nullable=True),
)

stock = sa.Table(
    "api_stock",
    metadata,
    sa.Column("sku", sa.String(100), primary_key=True),
    sa.Column("on_hand", sa.BigInteger, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False),
)

# What inventory reserved per order, taken off the stock when the order is confirmed.
reservations = sa.Table(
    "api_reservations",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("lines", sa.JSON, nullable=False),  # [{sku, quantity}]
)

# One row per (client, key): the fingerprint of the request and the answer given.
idempotency = sa.Table(
    "api_idempotency",
    metadata,
    sa.Column("client", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1(op: Operations) -> None:
    op.create_table(
        "api_products",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("unit_price", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "api_orders",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(50), nullable=True),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("total", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("correlation_id", sa.String(256), nullable=True),
    )
    op.create_table(
        "api_stock",
        sa.Column("sku", sa.String(100), primary_key=True),
        sa.Column("on_hand", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_reservations",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("lines", sa.JSON, nullable=False),
    )
    op.create_table(
        "api_idempotency",
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    readmodel.create_suggestions_v1(op)


def _decision_keys_v1(op: Operations) -> None:
    op.create_table(
        "api_idempotency",
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


# The keys of the API's decisions live in the console's database (decision_store.py),
# beside the decisions: a key, its decision, the audit row and the event commit as one.
DECISION_KEYS = (
    Migration("api-decision-keys", 1, "idempotency keys of the API's decisions", _decision_keys_v1),
)

MIGRATIONS = (
    Migration(
        NAME,
        1,
        "catalog, orders, stock and reservations projections; idempotency keys;"
        " suggestions and their audit log",
        _v1,
    ),
)
