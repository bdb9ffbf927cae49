"""Taking records one at a time off a topic, as AMQP's `basic.get` takes messages.

Used for dead letters: `dlq list` takes every record and puts them all back, `dlq
redrive` takes and acks. The topic's own consumer group (named as the topic) keeps
what has been acked; a record put back is read again by the next `get`.
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from agentbus.errors import BrokerUnavailable
from agentbus.transport.base import Delivery, Message
from agentbus.transport.kafka_records import to_message

# How long a `get` waits for a record it knows is there (its offset is below the end).
GET_WAIT_MS = 5000


class _ReaderDelivery:
    __slots__ = ("_reader", "_tp", "delivery_tag", "message", "queue")

    redelivered = False
    stale = False

    def __init__(
        self, reader: TopicReader, tp: TopicPartition, offset: int, message: Message
    ) -> None:
        self._reader = reader
        self._tp = tp
        self.delivery_tag = offset
        self.message = message
        self.queue = reader.queue

    @property
    def channel_key(self) -> object:
        return self._tp

    async def ack(self, *, multiple: bool = False) -> None:
        await self._reader.commit(self._tp, self.delivery_tag + 1)

    async def reject(self, *, requeue: bool) -> None:
        if requeue:
            self._reader.put_back(self._tp, self.delivery_tag)
        else:
            await self._reader.commit(self._tp, self.delivery_tag + 1)


class TopicReader:
    def __init__(self, consumer: AIOKafkaConsumer, *, queue: str, topic: str) -> None:
        self._consumer = consumer
        self.queue = queue
        self._topic = topic
        self._partitions: list[TopicPartition] = []
        # Per partition, the first offset put back since it was last read.
        self._put_back: dict[TopicPartition, int] = {}

    async def start(self, partitions: int) -> None:
        await self._consumer.start()
        self._partitions = [TopicPartition(self._topic, p) for p in range(partitions)]
        self._consumer.assign(self._partitions)

    async def get(self) -> Delivery | None:
        try:
            ends = await self._consumer.end_offsets(self._partitions)
            for tp in self._partitions:
                if await self._consumer.position(tp) >= ends[tp]:
                    continue
                found = await self._consumer.getmany(tp, timeout_ms=GET_WAIT_MS, max_records=1)
                for record in found.get(tp, []):
                    self._put_back.pop(tp, None)
                    message = to_message(
                        record.value,
                        record.headers or (),
                        key=record.key,
                        routing_key=self.queue,
                        event_type=None,
                    )
                    return _ReaderDelivery(self, tp, record.offset, message)
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading {self._topic!r} failed: {exc}") from exc
        return None

    def put_back(self, tp: TopicPartition, offset: int) -> None:
        first = self._put_back.get(tp)
        if first is None or offset < first:
            self._put_back[tp] = offset
            self._consumer.seek(tp, offset)

    async def commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit on {self._topic!r} failed: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(KafkaError):
            await self._consumer.stop()
