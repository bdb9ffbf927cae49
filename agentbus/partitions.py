"""Partitioned consumption: one service's queue split by ordering key over processes.

Competing consumers on one queue lose a subject's order as soon as two processes
hold its events at once. A partitioned service instead declares `partitions`
queues fed by a consistent-hash exchange on the events' ordering key, so every
subject lives on one partition; each partition is a single-active-consumer queue,
so the broker lets one process at a time consume it, in order.

Which process takes which partition is settled through a roster in the service's
own database: each running process holds a member slot (a lock that dies with
it), and partition p goes to the (p mod n)-th of the n live members. Members look
again every few seconds; a process that joins or dies moves partitions, and a
moving partition is handed over by closing its channel, never by a cancel, so
its next owner cannot run ahead of what the last one still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.service import Service
from agentbus.settings import ConsumerSettings
from agentbus.store.lease import FileLease
from agentbus.transport.base import QueueSpec

log = logging.getLogger(__name__)

MAX_MEMBERS = 64


class Roster(Protocol):
    def members(self) -> tuple[int, list[int]]:
        """(this process's slot, every live member's slot), joining if need be."""
        ...

    def leave(self) -> None: ...


def assigned(slot: int, members: Sequence[int], partitions: int) -> list[int]:
    """The partitions a member takes: every n-th, by its rank among the n members."""
    ranked = sorted(set(members) | {slot})
    rank = ranked.index(slot)
    return [p for p in range(partitions) if p % len(ranked) == rank]


class FileRoster:
    """Member slots as file leases beside the SQLite databases (one machine)."""

    def __init__(self, directory: Path, group: str) -> None:
        self._directory = directory
        self._paths = [directory / f"{group}.member.{k}.lock" for k in range(MAX_MEMBERS)]
        self._held: FileLease | None = None
        self._slot = -1

    def members(self) -> tuple[int, list[int]]:
        if self._held is None:
            self._join()
        return self._slot, [k for k in range(MAX_MEMBERS) if k == self._slot or self._taken(k)]

    def _join(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        for slot, path in enumerate(self._paths):
            lease = FileLease(path)
            if lease.acquire():
                self._held, self._slot = lease, slot
                return
        raise RuntimeError(f"more than {MAX_MEMBERS} processes consume one partitioned queue")

    def _taken(self, slot: int) -> bool:
        path = self._paths[slot]
        if not path.exists():
            return False
        probe = FileLease(path)
        if probe.acquire():
            probe.release()
            return False
        return True

    def leave(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held, self._slot = None, -1


class AdvisoryRoster:
    """Member slots as PostgreSQL advisory locks, held by a session of their own."""

    def __init__(self, engine: sa.Engine, group: str) -> None:
        self.engine = engine
        self._space = zlib.crc32(f"agentbus.members.{group}".encode()) & 0x7FFFFFFF
        self._connection: sa.Connection | None = None
        self._slot = -1

    def members(self) -> tuple[int, list[int]]:
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))
            except sa.exc.DBAPIError:
                self.leave()  # the session died (a restart), and its lock with it
        if self._connection is None:
            self._join()
        assert self._connection is not None
        rows = self._connection.execute(
            sa.text(
                "SELECT objid::text::int FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND objsubid = 2 AND classid::text::bigint = :space"
                " AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
            ),
            {"space": self._space},
        )
        self._connection.commit()
        return self._slot, sorted({int(row[0]) for row in rows} | {self._slot})

    def _join(self) -> None:
        connection = self.engine.connect()
        for slot in range(MAX_MEMBERS):
            taken = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:space, :slot)"),
                {"space": self._space, "slot": slot},
            ).scalar()
            connection.commit()
            if taken:
                self._connection, self._slot = connection, slot
                return
        connection.close()
        raise RuntimeError(f"more than {MAX_MEMBERS} processes consume one partitioned queue")

    def leave(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._connection.close()
            self._connection, self._slot = None, -1


class PartitionedConsumer:
    """A service consumed from its partitions, the share of them this process holds."""

    def __init__(
        self,
        service: Service,
        bus: Bus,
        settings: ConsumerSettings,
        *,
        partitions: int,
        roster: Roster,
        interval: float = 2.0,
    ) -> None:
        self.service = service
        self.bus = bus
        self.settings = settings
        self.parts = [Consumer(service, bus, settings, partition=p) for p in range(partitions)]
        self.owned: set[int] = set()
        self._roster = roster
        self._interval = interval
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def queue(self) -> str:
        return self.service.queue

    @property
    def group(self) -> str:
        return self.service.queue

    @property
    def in_flight(self) -> int:
        return sum(part.in_flight for part in self.parts)

    def topology(self) -> list[QueueSpec]:
        # Every partition is declared by every member: the hash ring must be whole
        # before the first event is routed, or keys would land elsewhere later.
        specs: dict[str, QueueSpec] = {}
        for part in self.parts:
            for spec in part.topology():
                specs.setdefault(spec.name, spec)
        return list(specs.values())

    async def start(self) -> None:
        await self.bus.transport.declare(self.topology())
        await self.rebalance()
        self._watch = asyncio.get_running_loop().create_task(self._keep_balanced())

    async def rebalance(self) -> None:
        """Take the partitions that are ours now, hand over those that are not."""
        async with self._lock:
            try:
                slot, members = await asyncio.to_thread(self._roster.members)
            except Exception as exc:  # the roster's database is away: keep what we hold
                log.warning("%s: cannot read the roster (%s); keeping partitions", self.queue, exc)
                return
            mine = set(assigned(slot, members, len(self.parts)))
            if mine == self.owned:
                return
            for p in sorted(self.owned - mine):
                await self.parts[p].hand_over()
            for p in sorted(mine - self.owned):
                await self.parts[p].subscribe()
            self.owned = mine
            log.info(
                "%s: consuming partitions %s of %d as member %d of %s",
                self.queue,
                sorted(mine),
                len(self.parts),
                slot,
                members,
            )

    async def _keep_balanced(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.rebalance()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        async with self._lock:
            await asyncio.gather(*(self.parts[p].hand_over() for p in self.owned))
            self.owned = set()
            await asyncio.to_thread(self._roster.leave)
