"""The review console's own read model: suggestions, their decisions, and the events
a reviewer needs beside them, built only from events the console consumes.

Decisions are made here too: one conditional update moves a suggestion out of
`pending`, so of two reviewers deciding at once exactly one wins, and only the
winner's decision event is staged in the outbox, in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.store import Migration, Transaction

if TYPE_CHECKING:
    from agentbus.store import Operations

NAME = "review"
metadata = sa.MetaData()

suggestions = sa.Table(
    "review_suggestions",
    metadata,
    sa.Column("suggestion_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # the suggestion type's first word
    sa.Column("agent", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("sku", sa.String(100), nullable=False),
    sa.Column("urgency", sa.String(20), nullable=True),
    sa.Column("trigger_event_id", sa.String(256), nullable=False),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("envelope", sa.Text, nullable=False),  # the suggestion event, as received
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending | approved | rejected
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decided_quantity", sa.Integer, nullable=True),
    sa.Column("decision_note", sa.Text, nullable=True),
    sa.Column("decision_event_id", sa.String(256), nullable=True),
    sa.Column("purchase_order_id", sa.String(200), nullable=True),
    sa.Index("review_suggestions_by_status", "status", "created_at"),
    sa.Index("review_suggestions_by_sku", "sku", "created_at"),
)

# Events shown beside suggestions: triggers, the orders behind them, purchase orders.
context_events = sa.Table(
    "review_events",
    metadata,
    sa.Column("event_id", sa.String(256), primary_key=True),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=True),
    sa.Column("causation_id", sa.String(256), nullable=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)

audit = sa.Table(
    "review_audit",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("target", sa.String(256), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)

# One row per suggestion that people must hear of; sent_at set once delivered.
notices = sa.Table(
    "review_notices",
    metadata,
    sa.Column("suggestion_id", sa.String(200), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
)

# A sign-in with an outdated hash leaves its argon2id successor here; `replaces`
# names the configured hash it stands for, so a new configured hash wins again.
password_upgrades = sa.Table(
    "review_password_upgrades",
    metadata,
    sa.Column("user_name", sa.String(200), primary_key=True),
    sa.Column("replaces", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(400), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


def create_suggestions_v1(op: Operations) -> None:
    """The suggestions and audit tables as version 1 made them, here and in the API's
    database, which keeps them too."""
    op.create_table(
        "review_suggestions",
        sa.Column("suggestion_id", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("sku", sa.String(100), nullable=False),
        sa.Column("urgency", sa.String(20), nullable=True),
        sa.Column("trigger_event_id", sa.String(256), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("envelope", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_quantity", sa.Integer, nullable=True),
        sa.Column("decision_note", sa.Text, nullable=True),
        sa.Column("decision_event_id", sa.String(256), nullable=True),
        sa.Column("purchase_order_id", sa.String(200), nullable=True),
    )
    op.create_index("review_suggestions_by_status", "review_suggestions", ["status", "created_at"])
    op.create_index("review_suggestions_by_sku", "review_suggestions", ["sku", "created_at"])
    op.create_table(
        "review_audit",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(256), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )


def _v1(op: Operations) -> None:
    create_suggestions_v1(op)
    op.create_table(
        "review_events",
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("causation_id", sa.String(256), nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_table(
        "review_notices",
        sa.Column("suggestion_id", sa.String(200), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
    )


def _v2(op: Operations) -> None:
    op.create_table(
        "review_password_upgrades",
        sa.Column("user_name", sa.String(200), primary_key=True),
        sa.Column("replaces", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(400), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


MIGRATIONS = (
    Migration(NAME, 1, "suggestions, context events, audit log, notices", _v1),
    Migration(NAME, 2, "argon2id successors of outdated password hashes", _v2),
)


def password_upgrades_of(connection: sa.Connection) -> dict[str, tuple[str, str]]:
    rows = connection.execute(sa.select(password_upgrades)).all()
    return {row.user_name: (row.replaces, row.hash) for row in rows}


def store_password_upgrade(
    connection: sa.Connection, user: str, replaces: str, new_hash: str
) -> None:
    table = password_upgrades
    connection.execute(sa.delete(table).where(table.c.user_name == user))
    connection.execute(
        sa.insert(table).values(
            user_name=user, replaces=replaces, hash=new_hash, at=datetime.now(UTC)
        )
    )


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def kind_of(suggestion_type: str) -> str:
    """The console's short name for a suggestion type: `restock`, `substitute`."""
    return suggestion_type.split(".", 1)[0]


def suggestion_id_of(event: Event[Any]) -> str:
    data = event.data
    return str(getattr(data, "recommendation_id", None) or data.suggestion_id)


def record_suggestion(tx: Transaction, event: Event[Any], kind: str, envelope: str) -> bool:
    """Keep a new suggestion as pending; False if it was known already."""
    data = event.data
    suggestion_id = suggestion_id_of(event)
    inserted = tx.execute(
        tx.insert(suggestions)
        .values(
            suggestion_id=suggestion_id,
            event_id=event.id,
            kind=kind,
            agent=data.agent,
            subject=event.subject or data.sku,
            sku=data.sku,
            urgency=getattr(data, "urgency", None),
            trigger_event_id=data.trigger_event_id,
            trace_id=_trace_id(event.traceparent),
            envelope=envelope,
            created_at=event.time,
            status="pending",
        )
        .on_conflict_do_nothing(index_elements=[suggestions.c.suggestion_id])
    )
    return bool(inserted.rowcount)


def record_context(tx: Transaction, event: Event[Any], summary: str) -> None:
    tx.execute(
        tx.insert(context_events)
        .values(
            event_id=event.id,
            type=event.type,
            subject=event.subject,
            causation_id=event.causationid,
            time=event.time,
            summary=summary,
        )
        .on_conflict_do_nothing(index_elements=[context_events.c.event_id])
    )


def settle(
    tx: Transaction,
    suggestion_id: str,
    status: str,
    *,
    reviewer: str,
    quantity: int | None,
    note: str | None,
    at: datetime,
    event_id: str,
) -> bool:
    """Move a pending suggestion to `status`; False when it was decided already."""
    changed = tx.execute(
        sa.update(suggestions)
        .where(suggestions.c.suggestion_id == suggestion_id, suggestions.c.status == "pending")
        .values(
            status=status,
            decided_by=reviewer,
            decided_at=at,
            decided_quantity=quantity,
            decision_note=note,
            decision_event_id=event_id,
        )
    )
    return bool(changed.rowcount)


def note_purchase_order(tx: Transaction, recommendation_id: str, purchase_order_id: str) -> None:
    tx.execute(
        sa.update(suggestions)
        .where(suggestions.c.suggestion_id == recommendation_id)
        .values(purchase_order_id=purchase_order_id)
    )


def log(
    connection: sa.Connection,
    actor: str,
    action: str,
    target: str | None = None,
    detail: str | None = None,
) -> None:
    connection.execute(
        sa.insert(audit).values(
            at=datetime.now(UTC), actor=actor, action=action, target=target, detail=detail
        )
    )


# -- queries for the pages --------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    status: str = "pending"
    agent: str = ""
    kind: str = ""
    urgency: str = ""
    sku: str = ""


def listing(connection: sa.Connection, filters: Filters, limit: int = 200) -> list[dict[str, Any]]:
    query = sa.select(suggestions).order_by(suggestions.c.created_at.desc()).limit(limit)
    if filters.status:
        query = query.where(suggestions.c.status == filters.status)
    if filters.agent:
        query = query.where(suggestions.c.agent == filters.agent)
    if filters.kind:
        query = query.where(suggestions.c.kind == filters.kind)
    if filters.urgency:
        query = query.where(suggestions.c.urgency == filters.urgency)
    if filters.sku:
        query = query.where(suggestions.c.sku.contains(filters.sku, autoescape=True))
    return _suggestions(connection, query)


def agents(connection: sa.Connection) -> list[str]:
    return list(connection.scalars(sa.select(suggestions.c.agent).distinct().order_by("agent")))


def one(connection: sa.Connection, suggestion_id: str) -> dict[str, Any] | None:
    found = _suggestions(
        connection, sa.select(suggestions).where(suggestions.c.suggestion_id == suggestion_id)
    )
    return found[0] if found else None


def decided_on_sku(connection: sa.Connection, sku: str, but: str) -> list[dict[str, Any]]:
    query = (
        sa.select(suggestions)
        .where(
            suggestions.c.sku == sku,
            suggestions.c.status != "pending",
            suggestions.c.suggestion_id != but,
        )
        .order_by(suggestions.c.decided_at.desc())
        .limit(20)
    )
    return _suggestions(connection, query)


def events_by_id(connection: sa.Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    rows = connection.execute(
        sa.select(context_events).where(context_events.c.event_id.in_(ids))
    ).mappings()
    return {row["event_id"]: dict(row) for row in rows}


def caused_by(connection: sa.Connection, event_id: str, event_type: str) -> dict[str, Any] | None:
    row = (
        connection.execute(
            sa.select(context_events).where(
                context_events.c.causation_id == event_id, context_events.c.type == event_type
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def history(connection: sa.Connection, limit: int = 200) -> list[dict[str, Any]]:
    query = (
        sa.select(suggestions)
        .where(suggestions.c.status != "pending")
        .order_by(suggestions.c.decided_at.desc())
        .limit(limit)
    )
    return _suggestions(connection, query)


def audit_log(connection: sa.Connection, limit: int = 500) -> list[dict[str, Any]]:
    query = sa.select(audit).order_by(audit.c.seq.desc()).limit(limit)
    return [dict(row) for row in connection.execute(query).mappings()]


def _suggestions(connection: sa.Connection, query: sa.Select[Any]) -> list[dict[str, Any]]:
    return [_row(row) for row in connection.execute(query).mappings()]


def _row(row: Any) -> dict[str, Any]:
    found = dict(row)
    envelope = json.loads(found["envelope"])
    found["data"] = envelope.get("data", {})
    found["type"] = envelope.get("type")
    found["traceparent"] = envelope.get("traceparent")
    found["correlationid"] = envelope.get("correlationid")
    return found
