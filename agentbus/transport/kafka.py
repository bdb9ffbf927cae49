"""Kafka adapter over aiokafka, as the contract's Kafka binding lays it out.

The port speaks AMQP's words; here a queue with bindings is a consumer group named as
the queue, subscribed to one topic per event type (a pattern binding subscribes by
regex), and a queue without bindings (a dead-letter queue) is a topic of its own.
Topics are created by the platform, never by the broker on first use: publishing an
event type that has no topic is `Unroutable`, as on RabbitMQ with no queue bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from agentbus.errors import BrokerUnavailable, Unroutable
from agentbus.transport.base import (
    BrokerInfo,
    Delivery,
    DeliveryHandler,
    Message,
    PositionStore,
    QueueSpec,
    Subscription,
)
from agentbus.transport.kafka_group import GroupMember
from agentbus.transport.kafka_names import QUEUES_TOPIC, is_pattern, subscription_regex
from agentbus.transport.kafka_reader import TopicReader
from agentbus.transport.kafka_records import (
    ORIGINAL_OFFSET_HEADER,
    ORIGINAL_PARTITION_HEADER,
    ORIGINAL_TOPIC_HEADER,
    record_headers,
    record_key,
)
from agentbus.transport.kafka_registry import read_queues, record_queue, registry_topic

TOPIC_ALREADY_EXISTS = 36
# How long a topic just created may take to show in the broker's metadata before the
# clients are let at it anyway (they retry, logging each miss as an error).
VISIBLE_WITHIN_S = 10.0
# A pattern subscription notices topics created after it started this often.
METADATA_MAX_AGE_MS = 30_000


class KafkaTransport:
    """A producer, an admin client and a group member per consumed queue."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        prefix: str = "",
        partitions: int = 6,
        replication: int = 1,
        event_types: Iterable[str] = (),
        client_id: str = "agentbus",
        metadata_max_age_ms: int = METADATA_MAX_AGE_MS,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.partitions = partitions
        self.replication = replication
        self._event_types = tuple(event_types)
        self._client_id = client_id
        self._metadata_max_age_ms = metadata_max_age_ms
        self.session_timeout_ms = session_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._topics: set[str] = set()
        self._groups: dict[str, tuple[str, ...]] = {}
        self._members: list[GroupMember] = []
        self._readers: dict[str, TopicReader] = {}
        self._info = broker_info(bootstrap_servers)

    @property
    def exchange(self) -> str:
        # No exchange on Kafka: the prefix is what tells this shop's topics apart.
        return self.prefix

    @property
    def broker_info(self) -> BrokerInfo:
        return self._info

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def group(self, queue: str) -> str:
        return f"{self.prefix}{queue}"

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=self._client_id
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
        )
        try:
            await admin.start()
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            await admin.close()
            raise BrokerUnavailable(f"cannot connect to Kafka: {exc}") from exc
        self._admin, self._producer = admin, producer
        await self._create_topics([self.topic(t) for t in self._event_types])
        await self._create([registry_topic(self.topic(QUEUES_TOPIC), self.replication)])

    def _require(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            raise BrokerUnavailable("the Kafka transport is not started")
        return self._producer, self._admin

    async def close(self) -> None:
        await self._end(commit=True)

    async def abort(self) -> None:
        await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        members, self._members = self._members, []
        for member in members:
            await member.close(commit=commit)
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            await reader.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        offsets, self._offsets = self._offsets, None
        if offsets is not None:
            with contextlib.suppress(KafkaError):
                await offsets.stop()
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    # -- topology ----------------------------------------------------------------------

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        producer, _ = self._require()
        topics: list[str] = []
        for spec in queues:
            if spec.bindings:
                topics += [self.topic(b) for b in spec.bindings if not is_pattern(b)]
            else:
                topics.append(self.topic(spec.name))
        await self._create_topics(topics)
        for spec in queues:
            if spec.bindings and self._groups.get(spec.name) != spec.bindings:
                await record_queue(producer, self.topic(QUEUES_TOPIC), spec.name, spec.bindings)
                self._groups[spec.name] = spec.bindings

    async def _bindings(self, queue: str) -> tuple[str, ...] | None:
        """A queue's bindings, declared here or by any other process."""
        found = self._groups.get(queue)
        if found is None:
            self._groups.update(await read_queues(self.bootstrap_servers, self.topic(QUEUES_TOPIC)))
            found = self._groups.get(queue)
        return found

    async def _create_topics(self, names: Sequence[str]) -> None:
        missing = sorted(set(names) - self._topics)
        if missing:
            await self._create(
                [NewTopic(name, self.partitions, self.replication) for name in missing]
            )

    async def _create(self, wanted: list[NewTopic]) -> None:
        _, admin = self._require()
        try:
            response = await admin.create_topics(wanted)
        except KafkaError as exc:
            raise BrokerUnavailable(f"creating topics failed: {exc}") from exc
        created = []
        for name, code, *_ in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise BrokerUnavailable(f"creating topic {name!r} failed: error code {code}")
            if code == 0:
                created.append(name)
        await self._visible(created)
        self._topics.update(topic.name for topic in wanted)

    async def _visible(self, topics: list[str]) -> None:
        """Wait until topics just created have a leader for every partition in the
        metadata the broker answers with. The controller answers the creation first;
        a producer or consumer asking before the metadata follows gets "unknown topic",
        which aiokafka logs as an error on every retry: alarming on a first start that
        is going well."""
        _, admin = self._require()
        waiting = set(topics)
        deadline = asyncio.get_running_loop().time() + VISIBLE_WITHIN_S
        while waiting and asyncio.get_running_loop().time() < deadline:
            try:
                described = await admin.describe_topics(sorted(waiting))
            except KafkaError:
                described = []
            for topic in described:
                partitions = topic.get("partitions") or []
                if (
                    topic.get("error_code") == 0
                    and partitions
                    and all(p.get("leader", -1) >= 0 for p in partitions)
                ):
                    waiting.discard(topic.get("topic"))
            if waiting:
                await asyncio.sleep(0.05)

    async def _known(self, topic: str) -> bool:
        if topic in self._topics:
            return True
        _, admin = self._require()
        try:
            self._topics.update(await admin.list_topics())
        except KafkaError as exc:
            raise BrokerUnavailable(f"listing topics failed: {exc}") from exc
        return topic in self._topics

    async def delete_queue(self, queue: str) -> None:
        _, admin = self._require()
        self._groups.pop(queue, None)
        topic = self.topic(queue)
        if await self._known(topic):
            with contextlib.suppress(KafkaError):
                await admin.delete_topics([topic])
            self._topics.discard(topic)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        await self.publish_many([message])

    async def publish_many(self, messages: Sequence[Message]) -> None:
        for outcome in await self.publish_each(messages):
            if outcome is not None:
                raise outcome

    async def publish_each(self, messages: Sequence[Message]) -> list[Exception | None]:
        sent = [await self._send(self.topic(m.routing_key), m) for m in messages]
        outcomes: list[Exception | None] = []
        for item in sent:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            try:
                await item
                outcomes.append(None)
            except KafkaError as exc:
                outcomes.append(BrokerUnavailable(f"publish failed: {exc}"))
        return outcomes

    async def send_to_queue(self, queue: str, message: Message) -> None:
        """Into a topic of its own (a dead-letter queue), or back to a consumer group:
        a group has no topic of its own, so a record sent back to one (a redrive) goes to
        the topic it was first read from, keyed as it was. Every other group reading that
        topic gets it again too, and drops it as an event it has already seen."""
        topic = self.topic(queue)
        # A topic first: dead letters come this way one by one, and looking a group up
        # reads the whole queue registry.
        if not await self._known(topic) and await self._bindings(queue) is not None:
            topic, message = _sent_back(message)
        sent = await self._send(topic, message)
        if isinstance(sent, Exception):
            raise sent
        try:
            await sent
        except KafkaError as exc:
            raise BrokerUnavailable(f"publish to {queue!r} failed: {exc}") from exc

    async def _send(self, topic: str, message: Message) -> asyncio.Future[Any] | Exception:
        """Hand the record to the producer; the future settles when the broker has it."""
        producer, _ = self._require()
        if not await self._known(topic):
            return Unroutable(f"no topic {topic!r}")
        try:
            future: asyncio.Future[Any] = await producer.send(
                topic,
                value=message.body,
                key=record_key(message),
                headers=record_headers(message),
            )
        except KafkaError as exc:
            return BrokerUnavailable(f"publish to {topic!r} failed: {exc}")
        return future

    # -- consuming ---------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        handler: DeliveryHandler,
        *,
        prefetch: int,
        positions: PositionStore | None = None,
    ) -> Subscription:
        self._require()
        bindings = await self._bindings(queue)
        if bindings is None:
            raise KeyError(queue)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self._client_id,
            group_id=self.group(queue),
            enable_auto_commit=False,
            # A group with no offsets yet reads what its topics hold: records published
            # after the queue was declared and before it was first consumed count too.
            auto_offset_reset="earliest",
            metadata_max_age_ms=self._metadata_max_age_ms,
            max_poll_records=max(1, prefetch),
            session_timeout_ms=self.session_timeout_ms,
            # Three heartbeats to a session, as the client's defaults have it (3 s to 10 s).
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 3),
        )
        member = GroupMember(
            consumer,
            queue=queue,
            group=self.group(queue),
            prefix=self.prefix,
            handler=handler,
            prefetch=prefetch,
            positions=positions,
        )
        if any(is_pattern(b) for b in bindings):
            consumer.subscribe(
                pattern=subscription_regex(self.prefix, bindings), listener=member.listener
            )
        else:
            consumer.subscribe(topics=[self.topic(b) for b in bindings], listener=member.listener)
        try:
            await consumer.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"joining group {self.group(queue)!r} failed: {exc}") from exc
        member.start()
        self._members.append(member)
        return member

    async def get(self, queue: str) -> Delivery | None:
        reader = self._readers.get(queue)
        if reader is None:
            topic = self.topic(queue)
            if not await self._known(topic):
                raise KeyError(queue)
            reader = TopicReader(
                AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    group_id=self.group(queue),
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                ),
                queue=queue,
                topic=topic,
            )
            await reader.start(await self._partition_count(topic))
            self._readers[queue] = reader
        return await reader.get()

    async def depth(self, queue: str) -> int:
        """Records the queue's group has yet to settle: its lag, over its topics."""
        backlog = await self.backlog(queue)
        return sum(max(0, end - position) for position, end in backlog.values())

    async def backlog(self, queue: str) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition of the queue's topics: where its group reads from (its committed
        offset, else the partition's start) and where the partition ends."""
        bindings = await self._bindings(queue)
        if bindings is not None:
            topics = await self._subscribed_topics(bindings)
        elif await self._known(self.topic(queue)):
            topics = [self.topic(queue)]
        else:
            raise KeyError(queue)
        _, admin = self._require()
        partitions: list[TopicPartition] = []
        for topic in topics:
            count = await self._partition_count(topic)
            partitions += [TopicPartition(topic, p) for p in range(count)]
        if not partitions:
            return {}
        offsets = await self._offsets_reader()
        try:
            committed = await admin.list_consumer_group_offsets(self.group(queue))
            ends = await offsets.end_offsets(partitions)
            starts = await offsets.beginning_offsets(partitions)
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading the lag of {queue!r} failed: {exc}") from exc
        backlog: dict[TopicPartition, tuple[int, int]] = {}
        for tp in partitions:
            done = committed.get(tp)
            start = done.offset if done is not None and done.offset >= 0 else starts[tp]
            backlog[tp] = (start, ends[tp])
        return backlog

    async def _subscribed_topics(self, bindings: tuple[str, ...]) -> list[str]:
        if not any(is_pattern(b) for b in bindings):
            return [self.topic(b) for b in bindings if await self._known(self.topic(b))]
        _, admin = self._require()
        pattern = re.compile(subscription_regex(self.prefix, bindings))
        return [t for t in await admin.list_topics() if pattern.match(t)]

    async def _partition_count(self, topic: str) -> int:
        _, admin = self._require()
        try:
            [described] = await admin.describe_topics([topic])
        except KafkaError as exc:
            raise BrokerUnavailable(f"describing {topic!r} failed: {exc}") from exc
        return len(described["partitions"])

    async def _offsets_reader(self) -> AIOKafkaConsumer:
        """A consumer in no group, only to ask for the offsets partitions begin and end at."""
        if self._offsets is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, client_id=self._client_id
            )
            await consumer.start()
            self._offsets = consumer
        return self._offsets


def _sent_back(message: Message) -> tuple[str, Message]:
    """The topic a dead letter came from, and the record as it was before it failed."""
    origin = message.headers.get(ORIGINAL_TOPIC_HEADER)
    if not isinstance(origin, str) or not origin:
        raise Unroutable("the record does not say which topic it was read from")
    headers = {k: v for k, v in message.headers.items() if k not in _ORIGIN_HEADERS}
    return origin, replace(message, headers=headers)


_ORIGIN_HEADERS = frozenset(
    {ORIGINAL_TOPIC_HEADER, ORIGINAL_PARTITION_HEADER, ORIGINAL_OFFSET_HEADER}
)


def broker_info(bootstrap_servers: str) -> BrokerInfo:
    """The first bootstrap server, as spans name the broker."""
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return BrokerInfo(system="kafka", header_prefix="ce_", retries="in_place")
    return BrokerInfo(
        system="kafka",
        header_prefix="ce_",
        address=host.strip("[]"),
        port=int(port),
        retries="in_place",
    )
