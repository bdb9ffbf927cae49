"""The transport port: the few AMQP 0-9-1 operations the runtime needs.

Three adapters implement it, RabbitMQ (`rabbitmq.py`), in-process (`memory.py`) and
Kafka (`kafka.py`), and one contract test suite runs against all of them. Kafka has no
per-message nack: its deliveries are `LogDelivery`s and the runtime retries them in place.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeGuard, runtime_checkable

HeaderValue = Any  # an AMQP field table value: str, int, bool, bytes, list, dict
EVENTS_EXCHANGE = "agentbus.events"
# Every event carries its ordering key (subject, else id) here, so that a
# partitioned queue can spread events by it and keep each key on one partition.
PARTITION_KEY_HEADER = "agentbus-key"
QueueKind = Literal["quorum", "classic"]
# How a failed delivery is tried again: through delay queues the broker dead-letters
# back on expiry (AMQP), or by the consumer holding it and handling it again (a log,
# where a record cannot be sent back without giving up the order of its partition).
RetryMode = Literal["queues", "in_place"]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What spans, dead letters and documents say of the broker behind a transport."""

    # `messaging.system` of the spans: `rabbitmq`, `kafka`, or `in_process`.
    system: str
    # Where binary-mode CloudEvents carry their attributes (`ce-` on AMQP, `ce_` on Kafka).
    header_prefix: str = "ce-"
    # The server, when there is one: `server.address` and `server.port` of the spans.
    address: str | None = None
    port: int | None = None
    retries: RetryMode = "queues"


@dataclass(frozen=True, slots=True)
class Message:
    """What travels: a body with the properties and headers the contract names."""

    body: bytes
    routing_key: str
    message_id: str | None = None
    type: str | None = None
    content_type: str | None = None
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A durable queue and, for consumer queues, its bindings to the events exchange.

    `dead_letter_to` names a queue that receives what this queue dead-letters (message
    TTL expiry, or `delivery_limit` redeliveries exceeded on quorum queues).
    """

    name: str
    bindings: tuple[str, ...] = ()
    kind: QueueKind = "quorum"
    message_ttl_ms: int | None = None
    dead_letter_to: str | None = None
    delivery_limit: int | None = None
    single_active_consumer: bool = False
    # A private queue that lives as long as the connection that declared it.
    transient: bool = False
    # One partition of the queue group so named: its bindings feed the group's
    # hash exchange, which sends each partition key to one partition only.
    partition_group: str | None = None


class Delivery(Protocol):
    """A message handed to a consumer, to be settled exactly once."""

    @property
    def message(self) -> Message: ...

    @property
    def queue(self) -> str: ...

    @property
    def delivery_tag(self) -> int: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def channel_key(self) -> object:
        """Identifies the channel: delivery tags are only ordered within one."""
        ...

    @property
    def stale(self) -> bool:
        """Its channel has closed: the broker will deliver the message again."""
        ...

    async def ack(self, *, multiple: bool = False) -> None: ...

    async def reject(self, *, requeue: bool) -> None: ...


class LogPartition(NamedTuple):
    """One partition of a log as one consumer group reads it, named as the broker names it."""

    group: str
    topic: str
    partition: int


@runtime_checkable
class LogDelivery(Delivery, Protocol):
    """A record read from a partition of a log: it stays in place when it fails.

    While a consumer retries it, `hold` stops the fetching of its partition (the
    records behind it wait; other partitions go on) and `release` lets it go on.
    Holds nest; `stale` turns true when the partition is revoked, which ends a retry.
    """

    @property
    def origin(self) -> Mapping[str, HeaderValue]:
        """Where it was read (topic, partition, offset), as dead-letter headers."""
        ...

    @property
    def log_partition(self) -> LogPartition: ...

    def resume_at(self, applied: Collection[int]) -> int:
        """Where its partition is to be read from again once the records at `applied`
        (this one's offset among them) have taken effect: the first record delivered and
        not yet settled that is not among them, else the one after the last read. Every
        record before it is settled or among `applied`, so storing it with their effects
        never skips a record; what follows it may be read twice, and is dropped then."""
        ...

    def hold(self) -> None: ...

    def release(self) -> None: ...


_LOG_KINDS: dict[type, bool] = {}


def is_log_delivery(delivery: Delivery) -> TypeGuard[LogDelivery]:
    """`isinstance(delivery, LogDelivery)`, looked up once per class: checking a runtime
    protocol walks its members each time, a cost per delivery (measured at a tenth of
    the inventory service's time on Kafka)."""
    kind = type(delivery)
    found = _LOG_KINDS.get(kind)
    if found is None:
        found = _LOG_KINDS[kind] = isinstance(delivery, LogDelivery)
    return found


class PositionStore(Protocol):
    """Where a consumer keeps the positions it has reached in a log, with its effects.

    On assignment a log transport reads a partition from the position stored here
    (when there is one) rather than from the offsets committed to the broker.
    """

    async def stored_positions(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], int]:
        """The stored position of each (topic, partition) that has one."""
        ...


DeliveryHandler = Callable[[Delivery], Coroutine[Any, Any, None]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop new deliveries; what was delivered stays with the consumer to settle."""
        ...

    async def close(self) -> None:
        """Close the subscription's channel: whatever it left unacked goes back to the
        queue at once, ahead of the rest (a hand-over, as a crash would do it)."""
        ...


class Transport(Protocol):
    """A connection to a broker with one topic exchange for events."""

    @property
    def exchange(self) -> str: ...

    @property
    def broker_info(self) -> BrokerInfo: ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Close cleanly: unsettled deliveries go back to their queues."""
        ...

    async def abort(self) -> None:
        """Drop the connection as a crash would, without settling anything."""
        ...

    async def declare(self, queues: Sequence[QueueSpec]) -> None: ...

    async def publish(self, message: Message) -> None:
        """Publish to the events exchange, confirmed; raise `Unroutable` if no queue binds."""
        ...

    async def publish_many(self, messages: Sequence[Message]) -> None:
        """Publish several, pipelined; return when all are confirmed."""
        ...

    async def publish_each(self, messages: Sequence[Message]) -> list[Exception | None]:
        """Publish several, pipelined; per message, None or the error it met."""
        ...

    async def send_to_queue(self, queue: str, message: Message) -> None:
        """Put a message straight into one queue (retry, dead letter, redrive)."""
        ...

    async def consume(
        self,
        queue: str,
        handler: DeliveryHandler,
        *,
        prefetch: int,
        positions: PositionStore | None = None,
    ) -> Subscription:
        """Deliver the queue's messages to `handler`. `positions` is for a log, whose
        readers keep their own place; a queue broker, which keeps it, ignores it."""
        ...

    async def get(self, queue: str) -> Delivery | None:
        """Take one message without a consumer, unsettled; None when the queue is empty."""
        ...

    async def depth(self, queue: str) -> int:
        """Messages ready in the queue; raise `KeyError` if there is no such queue."""
        ...

    async def delete_queue(self, queue: str) -> None: ...


def partition_of(key: str, partitions: int) -> int:
    """Which of `partitions` a key belongs to, where the transport itself decides."""
    return zlib.crc32(key.encode()) % partitions


def describe(spec: QueueSpec) -> dict[str, Any]:
    """AMQP queue arguments for a spec (shared by the RabbitMQ adapter and docs)."""
    arguments: dict[str, Any] = {}
    if spec.kind == "quorum" and not spec.transient:
        arguments["x-queue-type"] = "quorum"
    if spec.message_ttl_ms is not None:
        arguments["x-message-ttl"] = spec.message_ttl_ms
    if spec.dead_letter_to is not None:
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = spec.dead_letter_to
        if spec.kind == "quorum":
            # At-least-once dead-lettering: the broker keeps the message until the
            # dead-letter queue has confirmed it. It requires reject-publish overflow.
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
    if spec.delivery_limit is not None and spec.kind == "quorum":
        arguments["x-delivery-limit"] = spec.delivery_limit
    if spec.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    return arguments
