"""Deciding a suggestion, for every reviewing tool (the console, the HTTP API).

Every tool decides in one database, the console's (the read model's tables there;
the API reaches it through `consumers.api.decision_store`). A decision is one
transaction there: the suggestion leaves `pending` only if it still was, the decision
event goes to the outbox, the audit log gets a row; the loser of two decisions, from
whichever tool, changes nothing but the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from agentbus.agent import DecisionInvalid, Decisions
from agentbus.envelope import Event, EventCodec, derived_id, new_event
from agentbus.store import Transaction
from agentbus.telemetry import extract_context, inject_headers, tracer
from consumers.review import readmodel

__all__ = ["DecisionInvalid", "Reviewing", "commit", "decision_event", "in_suggestion_trace"]

VERBS = ("approve", "reject")


class Reviewing:
    """The agents' decision declarations, looked up by suggestion and by decision."""

    def __init__(self, decisions: Mapping[str, Decisions]) -> None:
        self.decisions = dict(decisions)
        self._by_decision = {
            event_type: (declared, event_type == declared.event_types[0])
            for declared in self.decisions.values()
            for event_type in declared.event_types
        }

    @property
    def suggestion_types(self) -> tuple[str, ...]:
        return tuple(self.decisions)

    @property
    def decision_types(self) -> tuple[str, ...]:
        return tuple(self._by_decision)

    def changeable(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        """What a reviewer may change when approving this suggestion."""
        declared = self.decisions.get(_type_of(row))
        if declared is None or declared.changes is None:
            return ()
        return tuple(declared.changes.model_fields)

    def decide(
        self,
        row: Mapping[str, Any],
        verb: str,
        reviewer: str,
        *,
        text: str | None,
        changes: Mapping[str, Any] | None = None,
        as_text: bool = False,
    ) -> BaseModel:
        """The decision's data; `text` is the note of an approval, the reason of a rejection."""
        declared = self.decisions.get(_type_of(row))
        if declared is None:
            raise DecisionInvalid(f"no agent declares how {_type_of(row)} suggestions are decided")
        if verb == "approve":
            return declared.approval(
                row["data"], reviewer, text or None, changes or {}, as_text=as_text
            )
        if verb == "reject":
            return declared.rejection(row["data"], reviewer, text or "")
        raise DecisionInvalid(f"unknown action {verb[:20]!r} (approve or reject)")

    def from_form(
        self, row: Mapping[str, Any], verb: str, reviewer: str, form: Mapping[str, Any]
    ) -> BaseModel:
        """The decision an HTML form asks for: every field a string, a blank one left
        out, so an approval changes only what the reviewer filled in."""
        if verb == "approve":
            changes = {
                name: value for name in self.changeable(row) if (value := _field(form, name))
            }
            note = _field(form, "note") or None
            return self.decide(row, verb, reviewer, text=note, changes=changes, as_text=True)
        return self.decide(row, verb, reviewer, text=_field(form, "reason"))

    def settle_from(self, tx: Transaction, event: Event[Any]) -> None:
        """A decision made elsewhere (another tool, a script) closes the suggestion here
        too; this tool's own find it closed already."""
        declared, approves = self._by_decision[event.type]
        data = event.data
        _settle(
            tx,
            str(getattr(data, declared.id_field)),
            data,
            approved=approves,
            reviewer=data.reviewer,
            at=event.time,
            event_id=event.id,
        )


def decision_event(
    codec: EventCodec, row: Mapping[str, Any], data: BaseModel, *, service: str
) -> Event[Any]:
    """The decision, caused by the suggestion, made through `service`. Its id comes from
    the suggestion alone: there is one decision per suggestion, whoever makes it."""
    cause = codec.decode(str(row["envelope"]).encode())
    return new_event(
        data,
        source=f"/services/{service}",
        cause=cause,
        id=derived_id(readmodel.NAME, str(row["suggestion_id"]), "decision"),
    )


def commit(
    tx: Transaction, row: Mapping[str, Any], event: Event[Any], reviewer: str, *, approved: bool
) -> bool:
    """Settle, stage and audit the decision in `tx`; False (and an audit row) if it lost."""
    data = event.data
    won = _settle(
        tx,
        str(row["suggestion_id"]),
        data,
        approved=approved,
        reviewer=reviewer,
        at=datetime.now(UTC),
        event_id=event.id,
    )
    if not won:
        readmodel.log(
            tx.connection,
            reviewer,
            "decision_refused",
            str(row["suggestion_id"]),
            "decided already",
        )
        return False
    tx.stage([event])
    readmodel.log(
        tx.connection,
        reviewer,
        _status(approved),
        str(row["suggestion_id"]),
        _summary(data, approved),
    )
    return True


def in_suggestion_trace(event: Event[Any], row: Mapping[str, Any], *, service: str) -> Event[Any]:
    """The decision under a span of `service` in the suggestion's trace: a tool that has
    no request span of its own (the console) still shows where the decision was made."""
    traceparent = row.get("traceparent")
    parent = extract_context({}, traceparent if isinstance(traceparent, str) else None)
    with tracer().start_as_current_span(
        f"{service} {event.type}", context=parent, kind=SpanKind.SERVER
    ):
        carrier: dict[str, Any] = {}
        inject_headers(carrier)
        made = carrier.get("traceparent")
        if trace.get_current_span().get_span_context().is_valid and isinstance(made, str):
            return event.model_copy(update={"traceparent": made})
    return event


def _settle(
    tx: Transaction,
    suggestion_id: str,
    data: Any,
    *,
    approved: bool,
    reviewer: str,
    at: datetime,
    event_id: str,
) -> bool:
    """The read model's row for a decision, whichever tool made it."""
    return readmodel.settle(
        tx,
        suggestion_id,
        _status(approved),
        reviewer=reviewer,
        quantity=getattr(data, "quantity", None) if approved else None,
        note=getattr(data, "note", None) if approved else getattr(data, "reason", None),
        at=at,
        event_id=event_id,
    )


def _status(approved: bool) -> str:
    return "approved" if approved else "rejected"


def _field(form: Mapping[str, Any], name: str) -> str:
    return str(form.get(name, "")).strip()


def _type_of(row: Mapping[str, Any]) -> str:
    return str(row.get("type") or "")


def _summary(data: BaseModel, approved: bool) -> str:
    if not approved:
        return f"reason: {getattr(data, 'reason', '')}"
    kept = data.model_dump(exclude={"reviewer", "note"}, mode="json")
    return ", ".join(f"{key} {value}" for key, value in kept.items())
