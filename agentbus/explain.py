"""The fate of one event, pieced together from what the services recorded.

Each service's database says which of its consumers applied an event (the
inbox, with the time) and what it emitted because of it (outbox rows name
their cause). Agents add their runs and suggestions. The broker's dead-letter
queues say what was refused and why. Following causes from the event gives the
tree of everything it led to; the trace id comes from any event in that tree,
since they share their flow's trace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentbus.agent import tables as agent_tables
from agentbus.deadletters import DeadLetter
from agentbus.store import Database
from agentbus.store import tables as store_tables

MAX_EVENTS = 500  # a flow larger than this is cut, and says so


@dataclass
class Node:
    event_id: str
    type: str | None = None
    source: str | None = None
    time: str | None = None
    trace_id: str | None = None
    produced_by: str | None = None
    published_at: str | None = None
    applied_by: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    agent_runs: list[dict[str, Any]] = field(default_factory=list)
    suggestion: dict[str, Any] | None = None
    caused: list[Node] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(
            self.type or self.applied_by or self.dead_letters or self.agent_runs or self.caused
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "source": self.source,
            "time": self.time,
            "trace_id": self.trace_id,
            "produced_by": self.produced_by,
            "published_at": self.published_at,
            "applied_by": self.applied_by,
            "dead_letters": self.dead_letters,
            "agent_runs": self.agent_runs,
            "suggestion": self.suggestion,
            "caused": [child.to_json() for child in self.caused],
        }


@dataclass
class Explanation:
    root: Node
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.root.to_json(), "truncated": self.truncated}


@dataclass
class _Found:
    inbox: list[tuple[str, str, datetime]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    suggestions: list[dict[str, Any]] = field(default_factory=list)


async def explain(
    event_id: str,
    databases: Mapping[str, Database],
    dead_letters: Sequence[DeadLetter] = (),
) -> Explanation | None:
    """The event and what it caused; None when nothing here has heard of it."""
    nodes: dict[str, Node] = {event_id: Node(event_id)}
    level = [event_id]
    truncated = False
    while level:
        found = await _look_up(databases, level)
        _attach(nodes, found)
        children: list[str] = []
        for row in found.outbox:
            cause = row["causationid"]
            if row["id"] in nodes or cause not in nodes:
                continue
            if len(nodes) >= MAX_EVENTS:
                truncated = True
                break
            child = nodes[row["id"]] = _node_of(row)
            nodes[cause].caused.append(child)
            children.append(child.event_id)
        level = children
    for letter in dead_letters:
        node = nodes.get(letter.event_id or "")
        if node is not None:
            node.dead_letters.append(letter.to_json())
            # Refused everywhere, it was emitted by no service here: its letter names it.
            node.type = node.type or letter.type
    root = nodes[event_id]
    if not root.known:
        return None
    for node in nodes.values():
        node.caused.sort(key=lambda child: (child.time or "", child.event_id))
    root.trace_id = root.trace_id or next(
        (node.trace_id for node in nodes.values() if node.trace_id), None
    )
    return Explanation(root, truncated)


async def _look_up(databases: Mapping[str, Database], ids: Sequence[str]) -> _Found:
    found = _Found()
    for service, database in databases.items():

        def read(connection: sa.Connection, service: str = service) -> _Found:
            return _read(connection, service, ids)

        part = await database.read(read)
        found.inbox += part.inbox
        found.outbox += part.outbox
        found.runs += part.runs
        found.suggestions += part.suggestions
    return found


def _read(connection: sa.Connection, service: str, ids: Sequence[str]) -> _Found:
    found = _Found()
    inbox, outbox = store_tables.inbox, store_tables.outbox
    try:
        found.inbox = [
            (row.consumer, row.event_id, row.applied_at)
            for row in connection.execute(
                sa.select(inbox.c.consumer, inbox.c.event_id, inbox.c.applied_at).where(
                    inbox.c.event_id.in_(ids)
                )
            )
        ]
        rows = connection.execute(
            sa.select(outbox.c.body, outbox.c.published_at).where(
                sa.or_(outbox.c.causation_id.in_(ids), outbox.c.event_id.in_(ids))
            )
        )
        for row in rows:
            envelope = json.loads(row.body)
            envelope["_service"] = service
            envelope["_published_at"] = row.published_at
            found.outbox.append(envelope)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        connection.rollback()
        return found  # the service has not run here, or not since its last upgrade
    found.runs, found.suggestions = _agent_rows(connection, service, ids)
    return found


def _agent_rows(
    connection: sa.Connection, service: str, ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, suggestions = agent_tables.runs, agent_tables.suggestions
    try:
        run_rows = connection.execute(sa.select(runs).where(runs.c.trigger_id.in_(ids))).mappings()
        found_runs = [{**row, "_agent": service} for row in run_rows]
        suggestion_rows = connection.execute(
            sa.select(suggestions).where(suggestions.c.event_id.in_(ids))
        ).mappings()
        found_suggestions = [{**row, "_agent": service} for row in suggestion_rows]
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        connection.rollback()
        return [], []  # not an agent
    return found_runs, found_suggestions


def _node_of(envelope: Mapping[str, Any]) -> Node:
    node = Node(str(envelope["id"]))
    _describe(node, envelope)
    return node


def _describe(node: Node, envelope: Mapping[str, Any]) -> None:
    node.type = envelope.get("type")
    node.source = envelope.get("source")
    node.time = envelope.get("time")
    node.trace_id = _trace_id(envelope.get("traceparent"))
    node.produced_by = envelope.get("_service")
    published = envelope.get("_published_at")
    node.published_at = published.isoformat() if isinstance(published, datetime) else None


def _attach(nodes: dict[str, Node], found: _Found) -> None:
    for consumer, event_id, at in found.inbox:
        if event_id in nodes:
            nodes[event_id].applied_by.append({"consumer": consumer, "at": _iso(at)})
    for envelope in found.outbox:
        node = nodes.get(str(envelope["id"]))
        if node is not None and node.type is None:
            _describe(node, envelope)
    for run in found.runs:
        node = nodes.get(run["trigger_id"])
        if node is not None:
            node.agent_runs.append(
                {
                    "agent": run["_agent"],
                    "status": run["status"],
                    "suggestion_id": run["suggestion_id"],
                    "model": run["model"],
                    "input_tokens": run["input_tokens"],
                    "output_tokens": run["output_tokens"],
                    "started_at": _iso(run["started_at"]),
                    "finished_at": _iso(run["finished_at"]),
                }
            )
    for suggestion in found.suggestions:
        node = nodes.get(suggestion["event_id"])
        if node is not None:
            node.suggestion = {
                "agent": suggestion["_agent"],
                "suggestion_id": suggestion["suggestion_id"],
                "status": suggestion["status"],
                "decision": suggestion["decision"],
            }
            node.trace_id = node.trace_id or suggestion["trace_id"]
    for node in nodes.values():
        node.applied_by.sort(key=lambda applied: (applied["at"] or "", applied["consumer"]))


def _trace_id(traceparent: Any) -> str | None:
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
