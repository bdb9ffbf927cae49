"""The platform's own tables: the inbox (applied event ids), the outbox, and the positions
reached in logs."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

inbox = sa.Table(
    "agentbus_inbox",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(256), primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

outbox = sa.Table(
    "agentbus_outbox",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.String(256), nullable=False, unique=True),
    sa.Column("type", sa.String(512), nullable=False),
    sa.Column("subject", sa.String(512), nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    # Set when the broker first refused the event as unroutable (no queue bound).
    sa.Column("unroutable_since", sa.DateTime(timezone=True), nullable=True),
    # The event that caused this one: `agentbus explain` follows causes through it.
    sa.Column("causation_id", sa.String(256), nullable=True),
)
# The relay reads what is unpublished in order; only those rows are indexed.
sa.Index(
    "agentbus_outbox_unpublished",
    outbox.c.seq,
    postgresql_where=outbox.c.published_at.is_(None),
    sqlite_where=outbox.c.published_at.is_(None),
)
sa.Index("agentbus_outbox_causation", outbox.c.causation_id)

# Where a consumer group is to read each partition of a log from: written in the
# transaction that applies the records before it, so effects and position never part.
offsets = sa.Table(
    "agentbus_offsets",
    metadata,
    sa.Column("consumer_group", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("next_offset", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


migrations_table = sa.Table(
    "agentbus_migrations",
    metadata,
    sa.Column("component", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)
