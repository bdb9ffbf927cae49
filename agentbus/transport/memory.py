"""In-process broker with RabbitMQ's semantics, for the demo, unit tests and replay.

Not a mock: it routes by topic pattern, holds unacked deliveries per channel and
requeues them when their connection dies, dead-letters on TTL expiry and on a
delivery limit, and raises on unroutable publishes, as RabbitMQ does. Timers run
on a `Clock`, so tests can drive retry delays with a virtual one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agentbus.clock import Clock, SystemClock
from agentbus.errors import BrokerUnavailable, Unroutable
from agentbus.topic import topic_matches
from agentbus.transport.base import (
    EVENTS_EXCHANGE,
    PARTITION_KEY_HEADER,
    BrokerInfo,
    Delivery,
    DeliveryHandler,
    Message,
    PositionStore,
    QueueSpec,
    Subscription,
    partition_of,
)

# Spans name it as a system of its own: it is not RabbitMQ, though it behaves alike.
IN_PROCESS = BrokerInfo(system="in_process")


@dataclass(slots=True)
class _Entry:
    message: Message
    redelivered: bool = False
    delivery_count: int = 0


class _Channel:
    def __init__(self, connection: MemoryTransport) -> None:
        self.connection = connection
        self.tags = itertools.count(1)
        self.unacked: OrderedDict[int, tuple[_Queue, _Entry]] = OrderedDict()
        self.open = True
        # Delivery callbacks still running: cancelled when the channel dies, as
        # aiormq cancels its consumer tasks.
        self.callbacks: set[asyncio.Task[None]] = set()


@dataclass(slots=True)
class _MemoryDelivery:
    message: Message
    queue: str
    delivery_tag: int
    redelivered: bool
    _channel: _Channel
    _broker: InMemoryBroker

    @property
    def channel_key(self) -> object:
        return self._channel

    @property
    def stale(self) -> bool:
        return not self._channel.open

    async def ack(self, *, multiple: bool = False) -> None:
        self._broker.settle(self._channel, self.delivery_tag, multiple=multiple, requeue=None)

    async def reject(self, *, requeue: bool) -> None:
        self._broker.settle(self._channel, self.delivery_tag, multiple=False, requeue=requeue)


@dataclass(eq=False)
class _Consumer:
    handler: DeliveryHandler
    prefetch: int
    channel: _Channel
    active: bool = True

    def has_room(self) -> bool:
        return self.active and self.channel.open and len(self.channel.unacked) < self.prefetch


@dataclass(eq=False)
class _Queue:
    spec: QueueSpec
    ready: deque[_Entry] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    turn: int = 0


class InMemoryBroker:
    """The server side: exchanges and queues shared by every connection made to it."""

    def __init__(self, *, clock: Clock | None = None, exchange: str = EVENTS_EXCHANGE) -> None:
        self.clock: Clock = clock or SystemClock()
        self.exchange = exchange
        self.queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Routing key -> (queues bound, partition groups' members): matching every
        # pattern of every queue was a few percent of a replay. Reset on any change.
        self._routes: dict[str, tuple[list[_Queue], list[list[_Queue]]]] = {}

    def connect(self) -> MemoryTransport:
        return MemoryTransport(self)

    # -- topology ------------------------------------------------------------------

    def declare(self, spec: QueueSpec) -> None:
        self._routes.clear()
        existing = self.queues.get(spec.name)
        if existing is None:
            self.queues[spec.name] = _Queue(spec)
            return
        if replace(existing.spec, bindings=()) != replace(spec, bindings=()):
            # RabbitMQ answers PRECONDITION_FAILED to a redeclare with other arguments.
            raise ValueError(f"queue {spec.name!r} exists with different arguments")
        bindings = tuple(dict.fromkeys(existing.spec.bindings + spec.bindings))
        existing.spec = replace(existing.spec, bindings=bindings)

    def delete(self, name: str) -> None:
        self._routes.clear()
        self.queues.pop(name, None)

    # -- routing ---------------------------------------------------------------------

    def route(self, message: Message) -> None:
        bound, partitioned = self._bound(message.routing_key)
        targets = list(bound)
        for members in partitioned:
            key = str(message.headers.get(PARTITION_KEY_HEADER) or message.message_id or "")
            targets.append(members[partition_of(key, len(members))])
        if not targets:
            raise Unroutable(f"no queue is bound for routing key {message.routing_key!r}")
        for queue in targets:
            self.enqueue(queue, _Entry(message))

    def _bound(self, routing_key: str) -> tuple[list[_Queue], list[list[_Queue]]]:
        found = self._routes.get(routing_key)
        if found is not None:
            return found
        bound: list[_Queue] = []
        groups: dict[str, list[_Queue]] = {}
        for queue in self.queues.values():
            if any(topic_matches(pattern, routing_key) for pattern in queue.spec.bindings):
                group = queue.spec.partition_group
                if group is None:
                    bound.append(queue)
                else:
                    groups.setdefault(group, []).append(queue)
        partitioned = [sorted(m, key=lambda queue: queue.spec.name) for m in groups.values()]
        found = self._routes[routing_key] = (bound, partitioned)
        return found

    def to_queue(self, name: str, message: Message) -> None:
        queue = self.queues.get(name)
        if queue is None:
            raise Unroutable(f"no queue named {name!r}")
        self.enqueue(queue, _Entry(message))

    def enqueue(self, queue: _Queue, entry: _Entry, *, front: bool = False) -> None:
        if front:
            queue.ready.appendleft(entry)
        else:
            queue.ready.append(entry)
        ttl = queue.spec.message_ttl_ms
        if ttl is not None:
            self.clock.call_later(ttl / 1000, lambda: self._expire(queue, entry))
        self.dispatch(queue)

    def _expire(self, queue: _Queue, entry: _Entry) -> None:
        try:
            queue.ready.remove(entry)
        except ValueError:
            return  # already delivered
        self._dead_letter(queue, entry, "expired")

    def _dead_letter(self, queue: _Queue, entry: _Entry, reason: str) -> None:
        target = queue.spec.dead_letter_to
        if target is None or target not in self.queues:
            return
        headers = dict(entry.message.headers)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.spec.name)
        message = replace(entry.message, headers=headers, routing_key=target)
        self.enqueue(self.queues[target], _Entry(message))

    # -- delivery --------------------------------------------------------------------

    def dispatch(self, queue: _Queue) -> None:
        while queue.ready:
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            entry = queue.ready.popleft()
            self._deliver(queue, consumer, entry)

    def _next_consumer(self, queue: _Queue) -> _Consumer | None:
        count = len(queue.consumers)
        if queue.spec.single_active_consumer and count:
            first = queue.consumers[0]
            return first if first.has_room() else None
        for offset in range(count):
            consumer = queue.consumers[(queue.turn + offset) % count]
            if consumer.has_room():
                queue.turn = (queue.turn + offset + 1) % count
                return consumer
        return None

    def _deliver(self, queue: _Queue, consumer: _Consumer, entry: _Entry) -> None:
        channel = consumer.channel
        tag = next(channel.tags)
        channel.unacked[tag] = (queue, entry)
        delivery = _MemoryDelivery(
            message=entry.message,
            queue=queue.spec.name,
            delivery_tag=tag,
            redelivered=entry.redelivered,
            _channel=channel,
            _broker=self,
        )
        task = asyncio.get_running_loop().create_task(consumer.handler(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        channel.callbacks.add(task)
        task.add_done_callback(channel.callbacks.discard)

    def take(self, channel: _Channel, name: str) -> Delivery | None:
        queue = self.queues.get(name)
        if queue is None:
            raise KeyError(name)
        if not queue.ready:
            return None
        entry = queue.ready.popleft()
        tag = next(channel.tags)
        channel.unacked[tag] = (queue, entry)
        return _MemoryDelivery(entry.message, name, tag, entry.redelivered, channel, self)

    def settle(self, channel: _Channel, tag: int, *, multiple: bool, requeue: bool | None) -> None:
        if not channel.open:
            raise BrokerUnavailable("channel is closed")
        if tag not in channel.unacked:
            channel.open = False  # as RabbitMQ closes a channel on an unknown delivery tag
            raise BrokerUnavailable(f"unknown delivery tag {tag}")
        tags = [t for t in channel.unacked if t <= tag] if multiple else [tag]
        touched: set[int] = set()
        for settled in tags:
            queue, entry = channel.unacked.pop(settled)
            touched.add(id(queue))
            if requeue is True:
                self._return(queue, entry)
            elif requeue is False:
                self._dead_letter(queue, entry, "rejected")
        for queue in list(self.queues.values()):
            if id(queue) in touched or queue.consumers:
                self.dispatch(queue)

    def _return(self, queue: _Queue, entry: _Entry) -> None:
        entry.redelivered = True
        entry.delivery_count += 1
        limit = queue.spec.delivery_limit
        if queue.spec.kind == "quorum" and limit is not None and entry.delivery_count > limit:
            self._dead_letter(queue, entry, "delivery_limit")
            return
        self.enqueue(queue, entry, front=True)

    def drop_channel(self, channel: _Channel) -> None:
        """The channel died: its consumers go and its unacked deliveries return."""
        channel.open = False
        for task in list(channel.callbacks):
            task.cancel()
        for queue in self.queues.values():
            queue.consumers = [c for c in queue.consumers if c.channel is not channel]
        for queue, entry in reversed(list(channel.unacked.values())):
            self._return(queue, entry)
        channel.unacked.clear()
        for queue in list(self.queues.values()):
            self.dispatch(queue)


class _MemorySubscription:
    def __init__(self, broker: InMemoryBroker, queue: _Queue, consumer: _Consumer) -> None:
        self._broker = broker
        self._queue = queue
        self._consumer = consumer

    async def cancel(self) -> None:
        self._consumer.active = False
        if self._consumer in self._queue.consumers:
            self._queue.consumers.remove(self._consumer)

    async def close(self) -> None:
        self._consumer.active = False
        self._broker.drop_channel(self._consumer.channel)


class MemoryTransport:
    """One connection to an `InMemoryBroker`; each consumer gets its own channel."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self.broker = broker
        self._channels: list[_Channel] = []
        self._get_channel: _Channel | None = None
        self._transient: list[str] = []
        self._open = False

    @property
    def exchange(self) -> str:
        return self.broker.exchange

    @property
    def broker_info(self) -> BrokerInfo:
        return IN_PROCESS

    async def start(self) -> None:
        self._open = True

    async def close(self) -> None:
        await self.abort()

    async def abort(self) -> None:
        self._open = False
        channels, self._channels = self._channels, []
        for channel in channels:
            self.broker.drop_channel(channel)
        self._get_channel = None
        for name in self._transient:
            self.broker.delete(name)
        self._transient.clear()

    async def reconnect(self) -> None:
        """What a robust client lives through when the broker closes its connection.

        Every channel closes (its unacked deliveries return to their queues and
        delivery callbacks still running are cancelled), then every consumer is
        restored on a new channel with the same handler.
        """
        self._check()
        restored: list[tuple[_Queue, _Consumer]] = []
        for queue in self.broker.queues.values():
            restored += [(queue, c) for c in queue.consumers if c.channel.connection is self]
        channels, self._channels = self._channels, []
        self._get_channel = None
        for channel in channels:
            self.broker.drop_channel(channel)
        for queue, consumer in restored:
            consumer.channel = _Channel(self)
            self._channels.append(consumer.channel)
            if consumer.active:
                queue.consumers.append(consumer)
        for queue in {id(q): q for q, _ in restored}.values():
            self.broker.dispatch(queue)

    def _check(self) -> None:
        if not self._open:
            raise BrokerUnavailable("the in-process connection is closed")

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        self._check()
        for spec in queues:
            self.broker.declare(spec)
            if spec.transient:
                self._transient.append(spec.name)

    async def publish(self, message: Message) -> None:
        self._check()
        self.broker.route(message)

    async def publish_many(self, messages: Sequence[Message]) -> None:
        self._check()
        for message in messages:
            self.broker.route(message)
        await asyncio.sleep(0)

    async def publish_each(self, messages: Sequence[Message]) -> list[Exception | None]:
        self._check()
        outcomes: list[Exception | None] = []
        for message in messages:
            try:
                self.broker.route(message)
                outcomes.append(None)
            except Unroutable as exc:
                outcomes.append(exc)
        await asyncio.sleep(0)
        return outcomes

    async def send_to_queue(self, queue: str, message: Message) -> None:
        self._check()
        self.broker.to_queue(queue, message)

    async def consume(
        self,
        queue: str,
        handler: DeliveryHandler,
        *,
        prefetch: int,
        positions: PositionStore | None = None,
    ) -> Subscription:
        self._check()
        target = self.broker.queues.get(queue)
        if target is None:
            raise KeyError(queue)
        channel = _Channel(self)
        self._channels.append(channel)
        consumer = _Consumer(handler, max(prefetch, 1), channel)
        target.consumers.append(consumer)
        self.broker.dispatch(target)
        return _MemorySubscription(self.broker, target, consumer)

    async def get(self, queue: str) -> Delivery | None:
        self._check()
        if self._get_channel is None:
            self._get_channel = _Channel(self)
            self._channels.append(self._get_channel)
        return self.broker.take(self._get_channel, queue)

    async def depth(self, queue: str) -> int:
        self._check()
        return len(self.broker.queues[queue].ready)

    async def delete_queue(self, queue: str) -> None:
        self._check()
        self.broker.delete(queue)
