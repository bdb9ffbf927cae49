"""Replay: a recording's inputs through the shop's services and one restock policy.

The services run in this process on the in-process broker. Inputs are published
in time order, a day at a time, and the system settles before the next batch, so
every derived event carries its cause's time and an agent's tools, which read
only what is older than the trigger, see only the past. Reviewer decisions are
published on their own, after what came before them has settled, because they
change what the agent does next (a suggestion awaiting review coalesces new
triggers).

With `actors`, simulated reviewers and suppliers answer suggestions and
purchase orders as they appear; that is how `evals.simulate` makes recordings.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from agentbus.bootstrap import bootstrap
from agentbus.envelope import Event
from agentbus.memory import Embedder
from agentbus.memory.shared import release_shared_store
from agentbus.service import Service
from agentbus.settings import ModelSettings, Settings
from agentbus.transport.base import Delivery, QueueSpec, Transport
from consumers import inventory, memory, orders, payments, purchasing
from events import CATALOG

OBSERVER = "eval.observer"
SERVICES = ("inventory", "orders", "payments", "purchasing", "memory", "restock-agent")
# Events a person or partner sends in reaction to the shop: each waits for the past to settle.
DECISIONS = frozenset({"restock.approved", "restock.rejected"})


class Actors(Protocol):
    """Who answers the shop during a simulation: returns events to publish later."""

    def react(self, event: Event[Any]) -> Iterable[Event[Any]]: ...


@dataclass
class Replayed:
    """Everything that went over the bus, in time order (ties in publishing order)."""

    events: list[Event[Any]] = field(default_factory=list)
    inputs: int = 0
    # When each event id was first seen on the bus (perf_counter): run latencies.
    seen_at: dict[str, float] = field(default_factory=dict)

    def of_type(self, *types: str) -> list[Event[Any]]:
        return [event for event in self.events if event.type in types]


def is_derived(event: Event[Any]) -> bool:
    """Made by one of the services replay runs, so replay makes it again."""
    return any(event.source == f"/services/{name}" for name in SERVICES)


def inputs_of(recording: Sequence[Event[Any]]) -> list[Event[Any]]:
    return [event for event in recording if not is_derived(event)]


async def replay(
    recording: Sequence[Event[Any]],
    agent: Callable[[], Service],
    *,
    actors: Actors | None = None,
    data_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    transport: Transport | None = None,
    embedder: Embedder | None = None,
) -> Replayed:
    """Run the recording's inputs through the services and `agent`; return what happened.

    `transport` defaults to a fresh in-process broker; a RabbitMQ one runs the same
    replay through the broker (the live path, for comparisons). It is closed at the end.
    `embedder` is the memory service's (default: AGENTBUS_EMBEDDINGS). The system is
    given `ModelSettings.replay_idle_wait` to settle after each batch of inputs.
    """
    run = _Run(agent, actors, progress, transport, embedder)
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="agentbus-eval-") as folder:
            return await _replay(recording, run, Path(folder))
    return await _replay(recording, run, data_dir)


@dataclass
class _Run:
    agent: Callable[[], Service]
    actors: Actors | None
    progress: Callable[[int, int], None] | None
    transport: Transport | None
    embedder: Embedder | None


def replay_settings(data_dir: Path) -> Settings:
    """How a replay runs its services: on SQLite in `data_dir`, events carrying their
    cause's time, acks at once."""
    base = Settings.from_env({})
    return replace(
        base,
        data_dir=data_dir,
        database_url=None,
        consumer=replace(base.consumer, event_time="cause", ack_linger=0.0),
        # The databases are this replay's own (a fresh folder): no thread hand-offs, and
        # nothing to keep after a crash.
        stores_on_loop=True,
        sqlite_scratch=True,
    )


async def _replay(recording: Sequence[Event[Any]], run: _Run, data_dir: Path) -> Replayed:
    actors, progress, transport = run.actors, run.progress, run.transport
    idle_wait = ModelSettings.from_env().replay_idle_wait
    settings = replay_settings(data_dir)
    # In process, a message is in transit for one pass of the loop (a delivery's task
    # is made but not yet run; everything else in flight shows in a consumer's count,
    # a queue or an outbox backlog), so a pass of the loop between looks is enough,
    # and sleeping instead would leave the process idle: a timer's shortest wait is
    # a millisecond, twice per step. Over a broker each look asks it about every queue.
    settle_every, looks = 0.003, 2
    if transport is None:
        settle_every, looks = 0.0, 3
    services = [
        inventory.build(),
        orders.build(),
        payments.build(),
        purchasing.build(),
        memory.build(embedder=run.embedder),
        run.agent(),
    ]
    # Without a transport, the settings name no broker: the in-process one.
    system = bootstrap(settings, CATALOG, services, name="replay", transport=transport)
    bus, host = system.bus, system.host
    seen: list[Event[Any]] = []
    seen_at: dict[str, float] = {}

    async def observe(delivery: Delivery) -> None:
        event = bus.codec.decode(delivery.message.body)
        seen.append(event)
        seen_at.setdefault(event.id, time.perf_counter())
        await delivery.ack()

    system.observe(
        QueueSpec(OBSERVER, bindings=("#",), kind="classic", transient=True), observe, prefetch=1024
    )
    pending = _Schedule(inputs_of(recording))
    total = len(pending)
    published = 0
    try:
        async with system:
            while pending:
                batch = pending.next_batch()
                await bus.publish_many(batch)
                published += len(batch)
                before = len(seen)
                await host.settle(interval=settle_every, stable=looks, timeout=idle_wait)
                if actors is not None:
                    for event in _in_causal_order(seen[before:]):
                        for answer in actors.react(event):
                            pending.push(answer)
                            total += 1
                if progress is not None:
                    progress(published, total)
    finally:
        store = release_shared_store(data_dir)
        if store is not None:
            await store.close()
    return Replayed(events=_in_causal_order(seen), inputs=published, seen_at=seen_at)


def _in_causal_order(events: list[Event[Any]]) -> list[Event[Any]]:
    """By time, then causes before their effects, then id.

    Derived events carry their cause's time, so ties are many, and the order in
    which concurrent services publish them varies from run to run: this order
    does not, so the same scenario records to the same bytes.
    """
    depth: dict[str, int] = {}
    by_id = {event.id: event for event in events}

    def depth_of(event: Event[Any]) -> int:
        chain: list[str] = []
        current: Event[Any] | None = event
        while current is not None and current.id not in depth and current.id not in chain:
            chain.append(current.id)
            cause = current.causationid
            current = by_id.get(cause) if cause else None
        level = depth.get(current.id, -1) if current is not None else -1
        for event_id in reversed(chain):
            level += 1
            depth[event_id] = level
        return depth[event.id]

    return sorted(events, key=lambda event: (event.time, depth_of(event), event.id))


class _Schedule:
    """Inputs by time; batches end at a day's end or before a decision."""

    def __init__(self, events: Iterable[Event[Any]]) -> None:
        self._seq = itertools.count()
        self._heap: list[tuple[Any, int, Event[Any]]] = []
        for event in events:
            self.push(event)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: Event[Any]) -> None:
        heapq.heappush(self._heap, (event.time, next(self._seq), event))

    def next_batch(self) -> list[Event[Any]]:
        first = heapq.heappop(self._heap)[2]
        batch = [first]
        if first.type in DECISIONS:
            return batch
        day = first.time.date()
        while self._heap:
            upcoming = self._heap[0][2]
            if upcoming.type in DECISIONS or upcoming.time.date() != day:
                break
            batch.append(heapq.heappop(self._heap)[2])
        return batch
