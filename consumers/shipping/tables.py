"""The shipping service's own table: one row per order it has heard of."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.store import Migration

if TYPE_CHECKING:
    from agentbus.store import Operations

metadata = sa.MetaData()

# status: open (known, not confirmed) -> scheduled (confirmed, due at due_at) ->
# prepared | refunded; cancelled is a cancellation seen before the confirmation,
# kept so that a confirmation arriving behind it refunds at once.
shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("order_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("shipment_id", sa.String(200), nullable=True),
    # JSON [[sku, quantity], ...] from inventory.reserved: what leaves the warehouse.
    sa.Column("lines", sa.Text, nullable=True),
    sa.Column("amount", sa.Numeric(14, 2), nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
    # The event a later decision is caused by (the confirmation, or a cancellation
    # that came first), encoded, so that what is emitted then names its cause.
    sa.Column("cause", sa.LargeBinary, nullable=True),
)
sa.Index("shipments_due", shipments.c.status, shipments.c.due_at)


def _v1(op: Operations) -> None:
    op.create_table(
        "shipments",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("shipment_id", sa.String(200), nullable=True),
        sa.Column("lines", sa.Text, nullable=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cause", sa.LargeBinary, nullable=True),
    )
    op.create_index("shipments_due", "shipments", ["status", "due_at"])


MIGRATIONS = (Migration("shipping", 1, "shipments", _v1),)
