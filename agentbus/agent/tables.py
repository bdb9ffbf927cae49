"""The agent runtime's own tables, in the agent's database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from agentbus.store import Migration

if TYPE_CHECKING:
    from agentbus.store import Operations

metadata = sa.MetaData()

# One row per trigger: started -> completed, or coalesced into an open run.
runs = sa.Table(
    "agent_runs",
    metadata,
    sa.Column("trigger_id", sa.String(256), primary_key=True),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("suggestion_id", sa.String(256), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)

# The suggestion per subject that awaits review; further triggers coalesce into it.
open_suggestions = sa.Table(
    "agent_open_suggestions",
    metadata,
    sa.Column("subject", sa.String(256), primary_key=True),
    sa.Column("suggestion_id", sa.String(256), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
)

suggestions = sa.Table(
    "agent_suggestions",
    metadata,
    sa.Column("suggestion_id", sa.String(256), primary_key=True),
    sa.Column("event_id", sa.String(256), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),  # pending | approved | rejected
    sa.Column("decision", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

coalesced = sa.Table(
    "agent_coalesced",
    metadata,
    sa.Column("trigger_id", sa.String(256), primary_key=True),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("into_suggestion", sa.String(256), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

usage = sa.Table(
    "agent_usage",
    metadata,
    sa.Column("hour", sa.String(13), primary_key=True),  # 2026-11-24T10
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("fallbacks", sa.Integer, nullable=False),
)

# Every trigger asks for its subject's running run, and every run for its subject's
# past suggestions: without these each was a scan of all history.
runs_by_subject = sa.Index("agent_runs_by_subject", runs.c.subject, runs.c.status)
suggestions_by_subject = sa.Index(
    "agent_suggestions_by_subject", suggestions.c.subject, suggestions.c.created_at
)


def _v1(op: Operations) -> None:
    op.create_table(
        "agent_runs",
        sa.Column("trigger_id", sa.String(256), primary_key=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("suggestion_id", sa.String(256), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "agent_open_suggestions",
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("suggestion_id", sa.String(256), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_suggestions",
        sa.Column("suggestion_id", sa.String(256), primary_key=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("decision", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_coalesced",
        sa.Column("trigger_id", sa.String(256), primary_key=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("into_suggestion", sa.String(256), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_usage",
        sa.Column("hour", sa.String(13), primary_key=True),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("fallbacks", sa.Integer, nullable=False),
    )


def _v2(op: Operations) -> None:
    # Version 1 used to create its tables from the models, these indexes included:
    # a database where it ran alone may have them already.
    op.create_index(
        "agent_runs_by_subject", "agent_runs", ["subject", "status"], if_not_exists=True
    )
    op.create_index(
        "agent_suggestions_by_subject",
        "agent_suggestions",
        ["subject", "created_at"],
        if_not_exists=True,
    )


MIGRATIONS = (
    Migration(
        "agent-runtime",
        1,
        "runs, open and past suggestions, coalesced triggers, token usage",
        _v1,
    ),
    Migration("agent-runtime", 2, "runs and suggestions indexed by subject", _v2),
)
