"""Exactly-once under faults: the shop's services in their own processes, SIGKILLed.

`Chaos.run` publishes a seeded stream (with re-sent duplicates) to inventory,
orders and payments, each an `agentbus run` subprocess, while it SIGKILLs them at
random moments and restarts them and the broker (RabbitMQ or Kafka) suffers its
own faults; then it waits for the system to settle and compares `agentbus state
inventory/orders --json` with an `Oracle` (chaos_oracle.py).

What differs between brokers sits behind `Broker` (chaos_broker.py): RabbitMQ in
chaos_rabbitmq.py, Kafka in chaos_kafka.py. On RabbitMQ, queue names are fixed
(`inventory`, `orders`, `payments`, ...): runs hold a file lock,
`exclusive_queues()`, so that two of them on one machine never share them. On
Kafka a run's topics and groups carry a prefix of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec
from agentbus.errors import BrokerUnavailable
from agentbus.store import open_database
from agentbus.store import tables as store_tables
from agentbus.store.database import Database
from events import CATALOG
from tests.integration.chaos_broker import AGENT, RECORDER, SERVICES, Broker
from tests.integration.chaos_kafka import KafkaBroker, kill_mid_batch
from tests.integration.chaos_oracle import (
    LIMIT,
    START,
    AmbiguousStream,
    Oracle,
    Stream,
    build_stream,
    compare,
)
from tests.integration.chaos_processes import (
    CLUSTER_LOCK,
    LOCK_PATH,
    ServiceProcess,
    command,
    create_database,
    drop_database,
    exclusive_queues,
)
from tests.integration.chaos_rabbitmq import (
    RabbitBroker,
    clean_broker,
    is_dlq,
    is_shop_queue,
    queue_counts,
    queue_names,
)
from tests.integration.chaos_rebuild import check_rebuild, recorder_command
from tests.integration.rabbit_cluster import NODES, ClusterFaults

__all__ = [
    "AGENT",
    "LIMIT",
    "SERVICES",
    "START",
    "AmbiguousStream",
    "Chaos",
    "KafkaBroker",
    "Oracle",
    "RabbitBroker",
    "ServiceProcess",
    "Shop",
    "Stream",
    "build_stream",
    "clean_broker",
    "compare",
    "create_database",
    "drop_database",
    "exclusive_queues",
    "is_dlq",
    "is_shop_queue",
    "publish_surely",
    "queue_counts",
    "queue_names",
    "settle",
]

SECOND_MEMBER = "inventory-b"  # on Kafka: the group member a rebalance fault kills


@dataclass
class Shop:
    """A clean place to run the shop: the broker's scratch names, SQLite dir or PostgreSQL DB."""

    broker: Broker | str  # a broker, or RabbitMQ's URL
    data_dir: Path
    postgres_url: str | None = None  # the server; each Shop gets a database of its own
    database_name: str = field(default_factory=lambda: f"agentbus_test_{uuid.uuid4().hex[:12]}")
    payment_limit: Decimal = LIMIT
    database_url: str | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.broker, str):
            self.broker = RabbitBroker(self.broker)

    @property
    def bus(self) -> Broker:
        assert not isinstance(self.broker, str)
        return self.broker

    @property
    def amqp_url(self) -> str:
        assert isinstance(self.broker, RabbitBroker), "RabbitMQ only"
        return self.broker.amqp_url

    @property
    def exchange(self) -> str:
        assert isinstance(self.broker, RabbitBroker), "RabbitMQ only"
        return self.broker.exchange

    @property
    def backend(self) -> str:
        return "postgres" if self.postgres_url else "sqlite"

    def env(self, service: str | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "AGENTBUS_", "KAFKA_"))
            and k not in ("DATABASE_URL", "AMQP_URL")
        }
        env.update(
            self.bus.env(),
            AGENTBUS_DATA=str(self.data_dir),
            # Transient failures (an order's payment request overtaking it, a
            # database busy) retry fast here, and often enough to outlast a restart.
            AGENTBUS_RETRY_DELAY="0.2",
            AGENTBUS_RETRY_MAX_DELAY="2",
            AGENTBUS_MAX_ATTEMPTS="30",
            PAYMENT_LIMIT=str(self.payment_limit),
            OTEL_SDK_DISABLED="true",
            AGENTBUS_MODEL="policy",
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if service is not None and isinstance(self.broker, RabbitBroker):
            env["AMQP_URL"] = self.broker.service_url(service)
        return env

    async def prepare(self) -> None:
        await self.bus.prepare()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres_url:
            self.database_url = await create_database(self.postgres_url, self.database_name)

    async def dispose(self) -> None:
        await self.stop_all()
        with contextlib.suppress(Exception):
            await self.bus.dispose()
        if self.postgres_url and self.database_url:
            await drop_database(self.postgres_url, self.database_name)

    async def spawn(self, service: str, label: str | None = None) -> ServiceProcess:
        process = ServiceProcess(service, self.env(service), label)
        self.processes.append(process)
        await process.start()
        return process

    async def spawn_recorder(self, path: Path) -> ServiceProcess:
        """`agentbus record --queue` into `path`, as a process of its own (RabbitMQ)."""
        process = ServiceProcess(
            RECORDER,
            self.env(),
            RECORDER,
            command=recorder_command(path, RECORDER),
            ready="recording ",
        )
        self.processes.append(process)
        await process.start()
        return process

    async def stop_all(self) -> dict[str, int | None]:
        codes = await asyncio.gather(*(p.stop() for p in self.processes))
        return {p.label: code for p, code in zip(self.processes, codes, strict=True)}

    async def counts(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of each of the shop's queues (RabbitMQ)."""
        assert isinstance(self.broker, RabbitBroker), "RabbitMQ only"
        return await self.broker.counts()

    async def depth(self, reader: StateReader | None = None) -> int:
        """What the services have yet to settle (dead letters not counted; nor, on
        RabbitMQ, deliveries in flight: `settle` also waits for states to be still)."""
        if reader is not None:
            return await self.bus.depth(reader.positions)
        async with self.reader() as fresh:
            return await self.bus.depth(fresh.positions)

    async def dead_letters(self) -> dict[str, int]:
        return await self.bus.dead_letters()

    async def state(self, name: str) -> dict[str, Any]:
        """`agentbus state NAME --json`, as a user would read it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "state",
            name,
            "--json",
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(f"agentbus state {name} failed: {err.decode()[-800:]}")
        value: dict[str, Any] = json.loads(out)
        return value

    @contextlib.asynccontextmanager
    async def publisher(self) -> AsyncIterator[Bus]:
        transport = self.bus.transport("chaos")
        await transport.start()
        try:
            yield Bus(transport, EventCodec(CATALOG))
        finally:
            await transport.close()

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[StateReader]:
        reader = StateReader(self)
        try:
            yield reader
        finally:
            await reader.close()


class StateReader:
    """Reads the services' databases in this process: cheap enough to poll."""

    def __init__(self, shop: Shop) -> None:
        # The services' own views of their tables; the oracle never sees them.
        from consumers.inventory import read_state as inventory_state
        from consumers.orders import read_state as orders_state

        self._shop = shop
        self._codec = EventCodec(CATALOG)
        self._views = {"inventory": inventory_state, "orders": orders_state}
        self._databases = {name: self._open(name) for name in self._views}
        self._prefix = shop.bus.env().get("AGENTBUS_KAFKA_PREFIX", "")

    def _open(self, name: str) -> Database:
        shop = self._shop
        return open_database(name, self._codec, url=shop.database_url, data_dir=shop.data_dir)

    async def read(self, name: str) -> dict[str, Any]:
        view = self._views[name]

        def query(connection: sa.Connection) -> dict[str, Any]:
            try:
                return dict(view(connection))
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                return {}  # tables not there yet

        return await self._databases[name].read(query)

    async def positions(self, service: str) -> dict[tuple[str, int], int]:
        """The log positions `service` stored with its effects (none on RabbitMQ)."""
        if service not in self._databases:
            self._databases[service] = self._open(service)
        table = store_tables.offsets
        group = self._prefix + service

        def query(connection: sa.Connection) -> dict[tuple[str, int], int]:
            try:
                rows = connection.execute(
                    sa.select(table.c.topic, table.c.partition, table.c.next_offset).where(
                        table.c.consumer_group == group
                    )
                )
                return {(t, p): o for t, p, o in rows}
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                return {}

        result: dict[tuple[str, int], int] = await self._databases[service].read(query)
        return result

    async def close(self) -> None:
        for database in self._databases.values():
            await database.close()


async def settle(
    shop: Shop,
    orders: Collection[str],
    *,
    timeout: float,
    on_poll: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Wait until nothing is queued and both states stop changing.

    Stable for 3 s with every order decided, or for 20 s with some still pending
    (so that a lost order shows in the report instead of as a time-out).
    """
    started = time.monotonic()
    deadline = started + timeout
    last: tuple[dict[str, Any], dict[str, Any]] | None = None
    calm = 0
    pending = len(orders)
    async with shop.reader() as reader:
        while True:
            if on_poll is not None:
                await on_poll()
            try:
                depth = await shop.depth(reader)
            except Exception:  # the broker may be coming back: not calm yet
                depth = -1
            snapshot = (await reader.read("inventory"), await reader.read("orders"))
            decided = snapshot[1]
            pending = sum(
                1 for o in orders if (decided.get(o) or {}).get("status") in (None, "pending")
            )
            calm = calm + 1 if depth == 0 and snapshot == last else 0
            last = snapshot
            if calm >= (3 if pending == 0 else 20):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    return {
        "settle_seconds": round(time.monotonic() - started, 1),
        "settled": calm > 0,
        "pending_when_settled": pending,
    }


# -- the chaos run ---------------------------------------------------------------------


@dataclass
class Recovery:
    service: str  # what was hit: a service, the broker, "connections" or "postgresql"
    killed_at: float  # seconds since the run started
    unfinished_orders: int  # published orders not yet confirmed or rejected, just before
    down_seconds: float  # the fault to the restart (or the end of the fault)
    restart_to_consuming_seconds: float  # then until every service consumes (or reads) again
    fault: str = "sigkill"
    detail: dict[str, Any] = field(default_factory=dict)


# Faults whose tests ask that each lands on work in flight.
IN_FLIGHT_FAULTS = frozenset({"rebalance", "leader_kill", "node_stop"})
FAULT_NAMES = {"postgresql": "database_restart", "rebalance": "rebalance_mid_batch"}


@dataclass
class Chaos:
    """Publish a seeded stream while faults hit the system; compare with the oracle.

    The stream goes out in segments, one more than there are faults; after each
    but the last the driver waits a random moment (`kill_after` seconds) while
    the services work, then injects the next fault of a shuffled plan: SIGKILL
    of a service (every service in turn) and its restart, the broker closing
    every connection (RabbitMQ), a restart of the broker, a restart of
    PostgreSQL, and (Kafka) a SIGKILL of one of two inventory members while both
    hold records unsettled, so that its partitions move to the other. Every fault
    lands on work in flight. With `agent`, the restock agent runs too, and every
    suggestion on the wire is read back: a trigger must never yield two different
    suggestions. With `rebuild_check` (RabbitMQ), a recorder in a process of its own,
    SIGKILLed with inventory each time inventory is, records the run; at the end `agentbus rebuild
    inventory --check` on that recording must find the live state exactly, and name the
    row once one is changed by hand.
    """

    broker: Broker | str  # a broker, or RabbitMQ's URL
    data_dir: Path
    postgres_url: str | None = None
    seed: int = 7
    # Short: services drain a segment within a second or so on an idle machine, and a
    # fault after that lands on no saga in flight (seen once, 0 unfinished at 5 faults).
    kill_after: tuple[float, float] = (0.05, 0.6)
    agent: bool = False
    connection_drops: int = 0
    broker_restarts: int = 0
    database_restarts: int = 0
    rebalances: int = 0  # Kafka: mid-batch kills of a second inventory member
    # On a cluster (the broker's URL lists its nodes): kills of the inventory queue's
    # leader node and clean stops of another node, each node back a few seconds later.
    cluster: ClusterFaults | None = None
    leader_kills: int = 0
    node_stops: int = 0
    rebuild_check: bool = False
    # With the rebuild check: change a live row by hand afterwards and check again, to
    # see the check name it (a second rebuild of the whole recording).
    tamper_check: bool = True
    recoveries: list[Recovery] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.broker, str):
            nodes = NODES if self.cluster is not None else ()
            self.broker = RabbitBroker(self.broker, nodes=nodes, cluster=self.cluster)

    @property
    def bus(self) -> Broker:
        assert not isinstance(self.broker, str)
        return self.broker

    @property
    def services(self) -> tuple[str, ...]:
        return (*SERVICES, AGENT) if self.agent else SERVICES

    def _members(self) -> dict[str, int]:
        """How many consumers each queue has when all is well."""
        members = {s: 2 if s == "inventory" and self.rebalances else 1 for s in self.services}
        return {**members, RECORDER: 1} if self.rebuild_check else members

    async def run(
        self,
        events: int,
        kills: int,
        *,
        duplicate_rate: float = 0.10,
        settle_timeout: float = 600.0,
    ) -> dict[str, Any]:
        broker = self.bus
        stream = build_stream(
            self.seed, events, duplicate_rate=duplicate_rate, ordered=broker.ordered
        )
        oracle = Oracle(LIMIT)
        for event in stream.events:
            oracle.apply(event)
        shop = Shop(broker, self.data_dir, self.postgres_url)
        suggestions: dict[str, set[str]] = {}
        rebuilt: dict[str, Any] = {}
        recording = self.data_dir.parent / "recording.jsonl"
        if self.rebuild_check and not isinstance(broker, RabbitBroker):
            raise ValueError("the rebuild check records through a RabbitMQ queue")
        async with exclusive_queues(path=CLUSTER_LOCK if self.cluster else LOCK_PATH):
            try:
                await shop.prepare()
                if self.agent:
                    await broker.tap_suggestions()
                labels = {s: s for s in self.services}
                if self.rebalances:
                    labels[SECOND_MEMBER] = "inventory"
                spawned = await asyncio.gather(
                    *(shop.spawn(service, label) for label, service in labels.items())
                )
                processes = dict(zip(labels, spawned, strict=True))
                if self.rebuild_check:
                    processes[RECORDER] = await shop.spawn_recorder(recording)
                started = time.monotonic()
                events_out = stream.events
                if not broker.ordered:
                    # Types are ordered apart: the catalog and opening stock first.
                    async with shop.publisher() as bus:
                        await publish_surely(bus, stream.events[: stream.opening])
                    await _until_stocked(shop, stream.events[: stream.opening])
                    events_out = stream.events[stream.opening :]
                await self._storm(shop, processes, events_out, self._plan(kills), started)
                storm_done = time.monotonic()
                if self.cluster is not None:
                    await self.cluster.whole()

                async def watch() -> None:
                    for process in processes.values():
                        if not process.alive:  # died on its own: note it, bring it back
                            self.unexpected_exits.append(f"{process.label}:\n{process.stderr()}")
                            await process.start_surely()

                settling = await settle(
                    shop, oracle.outcomes, timeout=settle_timeout, on_poll=watch
                )
                seconds = time.monotonic() - started
                inventory, orders = await asyncio.gather(
                    shop.state("inventory"), shop.state("orders")
                )
                dead_letters = await shop.dead_letters()
                # Only refused adjustments are expected: anything else is listed with its
                # reason while the queues still hold it, so that a failure explains itself.
                surprises = sorted(
                    q.removesuffix(".dlq") for q in dead_letters if q != "inventory.dlq"
                )
                letters = await dead_letter_details(shop.env(), surprises) if surprises else []
                if self.agent:
                    suggestions = await broker.suggestions()
                exit_codes = await shop.stop_all()
                if self.rebuild_check:
                    rebuilt = await check_rebuild(
                        shop.env(),
                        recording,
                        shop.data_dir,
                        shop.database_url,
                        {event.id for event in stream.events},
                        tamper=self.tamper_check,
                    )
            finally:
                if self.cluster is not None:
                    await self.cluster.whole()
                await shop.dispose()
        report = compare(oracle, inventory, orders)
        statuses = Counter(
            f"{v['status']}:{v['reason']}" if v["reason"] else v["status"] for v in orders.values()
        )
        restart = [r.restart_to_consuming_seconds for r in self.recoveries]
        return {
            "transport": broker.name,
            "backend": shop.backend,
            "seed": self.seed,
            "events": len(stream.events),
            "unique_events": stream.originals,
            "duplicates": stream.duplicates,
            "orders": len(oracle.outcomes),
            "outcomes": dict(sorted(statuses.items())),
            "kills": sum(1 for r in self.recoveries if r.fault == "sigkill"),
            "killed": dict(Counter(r.service for r in self.recoveries if r.fault == "sigkill")),
            "fault_counts": dict(Counter(r.fault for r in self.recoveries)),
            "faults": [
                {
                    "fault": r.fault,
                    "target": r.service,
                    "at_second": round(r.killed_at, 1),
                    "unfinished_orders_at_fault": r.unfinished_orders,
                    "down_seconds": round(r.down_seconds, 2),
                    "recovery_seconds": round(r.restart_to_consuming_seconds, 2),
                    **r.detail,
                }
                for r in self.recoveries
            ],
            "recovery_seconds": {
                "max": round(max(restart, default=0.0), 2),
                "mean": round(sum(restart) / len(restart), 2) if restart else 0.0,
            },
            **report,
            "nodes_hit": self.cluster.hits if self.cluster else [],
            "suggestion_triggers": len(suggestions),
            "duplicate_suggestions": sum(len(ids) - 1 for ids in suggestions.values()),
            "dead_letters": dead_letters,
            "unexpected_dead_letters": letters,
            "expected_dead_letters_at_least": {"inventory.dlq": oracle.dead_letters},
            "unexpected_exits": self.unexpected_exits,
            "rebuild": rebuilt,
            "exit_codes_on_sigterm": exit_codes,
            **settling,
            "storm_seconds": round(storm_done - started, 1),
            "seconds": round(seconds, 1),
            "orders_per_second": round(len(oracle.outcomes) / seconds, 1),
            "events_per_second": round(len(stream.events) / seconds, 1),
        }

    def _plan(self, kills: int) -> list[str]:
        rng = random.Random(self.seed + 1)
        victims = [self.services[i % len(self.services)] for i in range(kills)]
        rng.shuffle(victims)  # every service gets its share, in a random order
        faults = {fault: 0 for fault in self.bus.faults}
        for fault in faults:
            if self.bus.faults[fault] == "connections_closed":
                faults[fault] = self.connection_drops
            elif self.bus.faults[fault] == "broker_restart":
                faults[fault] = self.broker_restarts
            elif fault == "leader_kill" and self.cluster is not None:
                faults[fault] = self.leader_kills
            elif fault == "node_stop" and self.cluster is not None:
                faults[fault] = self.node_stops
        plan = [
            *victims,
            *[fault for fault, n in faults.items() for _ in range(n)],
            *["postgresql"] * (self.database_restarts if self.postgres_url else 0),
            *["rebalance"] * self.rebalances,
        ]
        rng.shuffle(plan)
        return plan

    async def _storm(
        self,
        shop: Shop,
        processes: dict[str, ServiceProcess],
        events: Sequence[Event[Any]],
        plan: list[str],
        started: float,
    ) -> None:
        rng = random.Random(self.seed + 2)
        segments = len(plan) + 1
        bounds = [round(i * len(events) / segments) for i in range(segments + 1)]
        placed: list[str] = []
        async with shop.publisher() as bus, shop.reader() as reader:
            for segment in range(segments):
                chunk = events[bounds[segment] : bounds[segment + 1]]
                rebalance = segment < len(plan) and plan[segment] == "rebalance"
                if rebalance:
                    # Its first looks are slow (clients start, the queue registry is
                    # read): taken now, the kill can follow the segment at once.
                    await self._prime_rebalance(reader)
                publishing = asyncio.create_task(_publish_in_batches(bus, chunk))
                if segment == len(plan) or plan[segment] not in IN_FLIGHT_FAULTS:
                    await publishing
                # else the fault comes while the segment still flows in: with work in
                # flight for sure, not only if the machine is slow to drain it (a
                # leader's node killed after the segment found every order decided).
                placed += [e.data.order_id for e in chunk if e.type == "order.created"]
                if segment == len(plan):
                    break
                target = plan[segment]
                if not rebalance:
                    await asyncio.sleep(rng.uniform(*self.kill_after))
                decided = await _read_surely(reader, "orders")
                unfinished = sum(
                    1
                    for o in set(placed)
                    if (decided.get(o) or {}).get("status") in (None, "pending")
                )
                recovery = await self._hit(shop, processes, reader, target, rng)
                await publishing
                recovery.killed_at -= started
                recovery.unfinished_orders = unfinished
                self.recoveries.append(recovery)

    async def _hit(
        self,
        shop: Shop,
        processes: dict[str, ServiceProcess],
        reader: StateReader,
        target: str,
        rng: random.Random,
    ) -> Recovery:
        hit = time.monotonic()
        if target in processes:
            # The recorder dies with inventory: the service whose state the recording
            # must rebuild, killed at the same moment, and no segment of its own (the
            # suite's run stays as short as it was).
            also = [RECORDER] if self.rebuild_check and target == "inventory" else []
            victims = [processes[name] for name in (target, *also)]
            for victim in victims:
                await victim.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            restarted = time.monotonic()
            for victim in victims:
                await victim.start_surely()
            await self._until_consuming(shop, processes, reader)
            return Recovery(
                target,
                hit,
                0,
                restarted - hit,
                time.monotonic() - restarted,
                detail={"also_killed": also} if also else {},
            )
        if target == "rebalance":
            broker = self.bus
            assert isinstance(broker, KafkaBroker), "a mid-batch rebalance is a Kafka fault"
            moved = await kill_mid_batch(
                broker, "inventory", processes[SECOND_MEMBER], reader.positions
            )
            return Recovery(
                SECOND_MEMBER,
                hit,
                0,
                moved.rebalance_seconds,
                moved.rejoin_seconds,
                fault=FAULT_NAMES[target],
                detail={
                    "moved_partitions": moved.moved_partitions,
                    "unsettled_on_moved_partitions": moved.unsettled_on_moved,
                },
            )
        if target == "postgresql":
            down = await _restart_postgres()
            back = time.monotonic()
            await _read_surely(reader, "orders")
        else:
            down = await self.bus.inject(target)
            back = time.monotonic()
            await self._until_consuming(shop, processes, reader)
        return Recovery(
            target,
            hit,
            0,
            down,
            time.monotonic() - back,
            fault=FAULT_NAMES.get(target) or self.bus.faults[target],
        )

    async def _prime_rebalance(self, reader: StateReader) -> None:
        broker = self.bus
        assert isinstance(broker, KafkaBroker), "a mid-batch rebalance is a Kafka fault"
        await broker.groups(["inventory"])
        await broker.unsettled("inventory", reader.positions)

    async def _until_consuming(
        self,
        shop: Shop,
        processes: dict[str, ServiceProcess],
        reader: StateReader,
        timeout: float = 180,
    ) -> None:
        """Until every service's queue has its consumers again; a process that died
        meanwhile (none should) is noted and started again."""
        deadline = time.monotonic() + timeout
        while True:
            for process in processes.values():
                if not process.alive:
                    self.unexpected_exits.append(f"{process.label}:\n{process.stderr()}")
                    await process.start_surely()
            with contextlib.suppress(Exception):  # the broker may still be coming back
                if await self.bus.consuming(self._members(), reader.positions):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"services not consuming {timeout}s after the fault")
            await asyncio.sleep(0.2)


async def _restart_postgres() -> float:
    began = time.monotonic()
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    await command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart")
    return time.monotonic() - began


async def _until_stocked(shop: Shop, opening: Sequence[Event[Any]], timeout: float = 120) -> None:
    """Until inventory holds every product of the opening with its opening stock."""
    wanted = {e.data.sku: e.data.quantity for e in opening if e.type == "stock.received"}
    deadline = time.monotonic() + timeout
    async with shop.reader() as reader:
        while True:
            levels = await reader.read("inventory")
            if all((levels.get(s) or {}).get("on_hand") == q for s, q in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the opening stock was not applied in {timeout}s")
            await asyncio.sleep(0.3)


async def _publish_in_batches(bus: Bus, events: Sequence[Event[Any]]) -> None:
    for start in range(0, len(events), 200):
        await publish_surely(bus, events[start : start + 200])


async def publish_surely(bus: Bus, events: Sequence[Event[Any]], timeout: float = 180) -> None:
    """Publish until confirmed; a repeat carries the same ids, so it is a duplicate."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await bus.publish_many(events)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _read_surely(reader: StateReader, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await reader.read(name)
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def dead_letter_details(env: dict[str, str], queues: Sequence[str]) -> list[Any]:
    """`agentbus dlq list --json` for these consumer queues (for a report, never raises)."""
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "dlq",
            "list",
            "--json",
            *(arg for queue in queues for arg in ("--queue", queue)),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            return [f"agentbus dlq list: {err.decode(errors='replace')[-400:]}"]
        listed: list[Any] = json.loads(out)
        return listed
    except Exception as exc:  # a diagnostic: the report says what it could not list
        return [f"could not list the dead letters of {', '.join(queues)}: {exc!r}"]
