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

from pydantic import BaseModel

from agentbus.agent import DecisionInvalid, Decisions
from agentbus.envelope import Event, EventCodec, derived_id, new_event
from agentbus.store import Transaction
from consumers.review import readmodel

__all__ = ["DecisionInvalid", "Reviewing", "commit"]

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

    def settle_from(self, tx: Transaction, event: Event[Any]) -> None:
        """A decision made elsewhere (another tool, a script) closes the suggestion here
        too; this tool's own find it closed already."""
        declared, approves = self._by_decision[event.type]
        data = event.data
        readmodel.settle(
            tx,
            str(getattr(data, declared.id_field)),
            "approved" if approves else "rejected",
            reviewer=data.reviewer,
            quantity=getattr(data, "quantity", None) if approves else None,
            note=getattr(data, "note", None) if approves else getattr(data, "reason", None),
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
    won = readmodel.settle(
        tx,
        str(row["suggestion_id"]),
        "approved" if approved else "rejected",
        reviewer=reviewer,
        quantity=getattr(data, "quantity", None) if approved else None,
        note=getattr(data, "note", None) if approved else getattr(data, "reason", None),
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
        "approved" if approved else "rejected",
        str(row["suggestion_id"]),
        _summary(data, approved),
    )
    return True


def _type_of(row: Mapping[str, Any]) -> str:
    return str(row.get("type") or "")


def _summary(data: BaseModel, approved: bool) -> str:
    if not approved:
        return f"reason: {getattr(data, 'reason', '')}"
    kept = data.model_dump(exclude={"reviewer", "note"}, mode="json")
    return ", ".join(f"{key} {value}" for key, value in kept.items())
