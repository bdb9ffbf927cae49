"""One member of a consumer group: records as deliveries, acks as committed offsets.

Kafka has no per-message ack. A partition's records are delivered in offset order and
the committed offset is the first one not yet settled, so a record finished early
waits for the ones before it, as AMQP's `ack(multiple=True)` does. What a partition
held when it was revoked (or rewound) turns stale: the next owner reads it again from
the committed offset, and consumers drop what they have already applied.

A consumer that stores its positions with its effects (a `PositionStore`) is read from
there instead: on assignment each partition waits, paused, until its stored position
is known and sought; the offsets committed to Kafka then only show the group's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from agentbus.errors import BrokerUnavailable
from agentbus.transport.base import (
    DeliveryHandler,
    HeaderValue,
    LogPartition,
    Message,
    PositionStore,
)
from agentbus.transport.kafka_records import (
    ORIGINAL_OFFSET_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TOPIC_HEADER,
    to_message,
)

log = logging.getLogger(__name__)

# How long one fetch waits for records: also how soon a stop or a freed prefetch
# window is noticed by the fetching loop.
FETCH_WAIT_MS = 200
# Offsets settled within this window go to Kafka in one commit.
COMMIT_LINGER = 0.05
# With the prefetch window full the fetching loop waits this long for room before it
# polls with every partition paused, which keeps the member in its group (Kafka counts
# a member that stops polling as dead) but throws away what was fetched ahead.
FULL_WAIT = 10.0


class _Lease:
    """A partition as this member holds it, from its assignment (or a rewind) until
    it is revoked. Deliveries made under a revoked lease are stale."""

    __slots__ = (
        "committed",
        "dropped_from",
        "holds",
        "loading",
        "next_offset",
        "pending",
        "revoked",
        "tp",
    )

    def __init__(self, tp: TopicPartition, committed: int | None = None) -> None:
        self.tp = tp
        # Offsets delivered and not settled, in offset order (a dict keeps insertion order).
        self.pending: dict[int, None] = {}
        self.next_offset: int | None = None
        self.committed = committed
        self.holds = 0
        self.revoked = False
        # Until its stored position is known: nothing is delivered, and the first record
        # fetched meanwhile is where to read from if no position was stored.
        self.loading = False
        self.dropped_from: int | None = None

    def position(self) -> int | None:
        """The offset to commit: the first not settled, else the one after the last read."""
        for offset in self.pending:
            return offset
        return self.next_offset


class _KafkaDelivery:
    __slots__ = ("_lease", "_member", "delivery_tag", "message", "queue")

    redelivered = False  # Kafka does not say whether a record was read before

    def __init__(
        self, member: GroupMember, lease: _Lease, offset: int, message: Message, queue: str
    ) -> None:
        self._member = member
        self._lease = lease
        self.delivery_tag = offset
        self.message = message
        self.queue = queue

    @property
    def channel_key(self) -> object:
        return self._lease

    @property
    def stale(self) -> bool:
        return self._lease.revoked

    @property
    def log_partition(self) -> LogPartition:
        tp = self._lease.tp
        return LogPartition(self._member.group, tp.topic, tp.partition)

    def resume_at(self, applied: Collection[int]) -> int:
        lease = self._lease
        for offset in lease.pending:
            if offset not in applied:
                return offset
        assert lease.next_offset is not None  # set when this record was delivered
        return lease.next_offset

    @property
    def origin(self) -> Mapping[str, HeaderValue]:
        tp = self._lease.tp
        return {
            ORIGINAL_TOPIC_HEADER: tp.topic,
            ORIGINAL_PARTITION_HEADER: tp.partition,
            ORIGINAL_OFFSET_HEADER: self.delivery_tag,
        }

    def hold(self) -> None:
        self._member.hold(self._lease)

    def release(self) -> None:
        self._member.release(self._lease)

    async def ack(self, *, multiple: bool = False) -> None:
        await self._member.settle(self._lease, self.delivery_tag, multiple=multiple)

    async def reject(self, *, requeue: bool) -> None:
        if requeue:
            self._member.rewind(self._lease, self.delivery_tag)
        else:
            await self._member.settle(self._lease, self.delivery_tag, multiple=False)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._member.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._member.assigned(assigned)


class GroupMember:
    """A subscription of one consumer group to its topics (a list, or one regex)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        queue: str,
        group: str,
        prefix: str,
        handler: DeliveryHandler,
        prefetch: int,
        positions: PositionStore | None = None,
    ) -> None:
        self._consumer = consumer
        self._queue = queue
        self.group = group
        self._positions = positions
        self._prefix = prefix
        self._handler = handler
        self._prefetch = max(1, prefetch)
        self._leases: dict[TopicPartition, _Lease] = {}
        self._in_hand = 0
        self._fetching: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._starved = False  # polling with the window full: every partition paused
        self._cancelled = False
        self._abandoned = False  # left as a crash leaves: nothing more is committed
        self._paused: set[TopicPartition] = set()
        self.listener = _Listener(self)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._fetching = loop.create_task(self._fetch_loop())
        self._committing = loop.create_task(self._commit_loop())

    # -- rebalancing ---------------------------------------------------------------------

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        leases = {tp: _Lease(tp) for tp in assigned}
        self._leases.update(leases)
        if self._positions is None or not leases:
            return
        for lease in leases.values():
            lease.loading = True
        self._apply_pauses()
        try:
            stored = await self._positions.stored_positions(
                self.group, [(tp.topic, tp.partition) for tp in leases]
            )
        except Exception as exc:
            # The offsets committed to Kafka are safe to read from too: they never pass
            # a record that is not settled, only lag behind the stored ones.
            log.warning(
                "%s: stored positions unreadable (%s); reading from Kafka's", self.group, exc
            )
            stored = {}
        for tp, lease in leases.items():
            if self._leases.get(tp) is not lease:
                continue  # revoked meanwhile
            start = stored.get((tp.topic, tp.partition), lease.dropped_from)
            if start is not None:
                lease.next_offset = start
                with contextlib.suppress(KafkaError, AssertionError):
                    self._consumer.seek(tp, start)
            lease.loading = False
        self._apply_pauses()

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = {}
        for tp in revoked:
            lease = self._leases.pop(tp, None)
            if lease is None:
                continue
            lease.revoked = True
            self._in_hand -= len(lease.pending)
            self._freed()
            position = lease.position()
            if position is not None and position != lease.committed:
                offsets[tp] = position
        if offsets and not self._abandoned:
            # What is settled need not be read again by the next owner.
            await self._commit(offsets)
        self._paused -= revoked

    # -- settling ------------------------------------------------------------------------

    async def settle(self, lease: _Lease, offset: int, *, multiple: bool) -> None:
        if lease.revoked:
            raise BrokerUnavailable(f"partition {lease.tp.topic}/{lease.tp.partition} revoked")
        before = len(lease.pending)
        if multiple:
            while lease.pending:
                first = next(iter(lease.pending))
                if first > offset:
                    break
                del lease.pending[first]
        else:
            lease.pending.pop(offset, None)
        self._in_hand -= before - len(lease.pending)
        self._freed()
        if self._cancelled:
            # Draining: nothing more is fetched, and a stop must find the offsets written.
            await self._commit_leases()
        else:
            self._dirty.set()

    def rewind(self, lease: _Lease, offset: int) -> None:
        """Read the partition again from `offset`: what was delivered from there on
        turns stale, as a requeue on a closed AMQP channel does."""
        if lease.revoked or self._leases.get(lease.tp) is not lease:
            return
        lease.revoked = True
        self._in_hand -= len(lease.pending)
        self._freed()
        fresh = self._leases[lease.tp] = _Lease(lease.tp, lease.committed)
        fresh.next_offset = offset
        with contextlib.suppress(KafkaError, AssertionError):
            self._consumer.seek(lease.tp, offset)

    def hold(self, lease: _Lease) -> None:
        if lease.revoked:
            return
        lease.holds += 1
        self._apply_pauses()  # now, not at the next fetch: one may be waiting already

    def release(self, lease: _Lease) -> None:
        if lease.revoked or lease.holds == 0:
            return
        lease.holds -= 1
        self._apply_pauses()

    # -- fetching ------------------------------------------------------------------------

    def _freed(self) -> None:
        if self._in_hand < self._prefetch:
            self._room.set()

    def _apply_pauses(self) -> None:
        """Pause what is held and, when the fetching loop polls with the prefetch window
        full, everything: the poll goes on but returns nothing. Pausing drops what was
        fetched ahead for the partition, so a window that is merely full is waited on
        instead (`_wait_for_room`)."""
        if self._cancelled:
            return
        full = self._starved and self._in_hand >= self._prefetch
        wanted = {tp for tp, lease in self._leases.items() if full or lease.holds or lease.loading}
        if wanted != self._paused:
            resume = self._paused - wanted
            if resume:
                self._consumer.resume(*resume)
            pause = wanted - self._paused
            if pause:
                self._consumer.pause(*pause)
            self._paused = wanted

    async def _wait_for_room(self) -> None:
        if self._in_hand < self._prefetch:
            self._starved = False
            return
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), FULL_WAIT)
        self._starved = self._in_hand >= self._prefetch

    async def _fetch_loop(self) -> None:
        while not self._cancelled:
            try:
                await self._wait_for_room()
                self._apply_pauses()
                room = max(1, self._prefetch - self._in_hand)
                batch = await self._consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=room)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("%s: fetch failed (%s); trying again", self._queue, exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                await self._deliver(tp, records)

    async def _deliver(self, tp: TopicPartition, records: list[Any]) -> None:
        lease = self._leases.get(tp)
        for record in records:
            if self._cancelled or lease is None or self._leases.get(tp) is not lease:
                return  # revoked or rewound meanwhile: read again from its offset
            if lease.loading:
                # Fetched before the partition was paused to learn its stored position.
                if lease.dropped_from is None:
                    lease.dropped_from = record.offset
                return
            if lease.next_offset is not None and record.offset < lease.next_offset:
                continue
            if lease.holds:
                # Fetched before its partition was held: read again once it is released.
                with contextlib.suppress(KafkaError, AssertionError):
                    self._consumer.seek(tp, record.offset)
                return
            lease.pending[record.offset] = None
            lease.next_offset = record.offset + 1
            self._in_hand += 1
            message = to_message(
                record.value,
                record.headers or (),
                key=record.key,
                routing_key=tp.topic.removeprefix(self._prefix),
                event_type=tp.topic.removeprefix(self._prefix),
            )
            delivery = _KafkaDelivery(self, lease, record.offset, message, self._queue)
            try:
                await self._handler(delivery)
            except Exception:
                log.exception("%s: delivery handler failed", self._queue)

    # -- committing ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COMMIT_LINGER)
            self._dirty.clear()
            await self._commit_leases()

    async def _commit_leases(self) -> None:
        offsets: dict[TopicPartition, int] = {}
        for tp, lease in self._leases.items():
            position = lease.position()
            if position is not None and position != lease.committed:
                offsets[tp] = position
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (KafkaError, AssertionError) as exc:
            # Lost to a rebalance: the next owner reads from the last commit, and
            # consumers drop what they have already applied.
            log.warning("%s: commit failed (%s)", self._queue, exc)
            return
        for tp, offset in offsets.items():
            lease = self._leases.get(tp)
            if lease is not None:
                lease.committed = offset

    # -- ending --------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Stop fetching; what was delivered can still be acked, and is committed."""
        if self._cancelled:
            return
        self._cancelled = True
        await _finish(self._fetching)
        await _finish(self._committing)
        await self._commit_leases()

    async def close(self, *, commit: bool = True) -> None:
        """Leave the group; unsettled records go to the next owner. Without `commit`,
        as a crash would: nothing settled since the last commit is written."""
        if commit:
            await self.cancel()
        else:
            self._cancelled = self._abandoned = True
            await _finish(self._fetching)
            await _finish(self._committing)
        for lease in self._leases.values():
            lease.revoked = True
        self._leases.clear()
        with contextlib.suppress(KafkaError):
            await self._consumer.stop()


async def _finish(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
