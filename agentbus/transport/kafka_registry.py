"""The queues declared on a Kafka cluster, kept where every process can read them.

A consumer group has no bindings of its own on Kafka: a group is whatever its members
subscribe to. So that a queue means the same in every process (one declares it, another
consumes it or measures its depth, as on an AMQP broker), each declaration is a record
in a compacted topic, keyed by the queue's name, holding its bindings.
"""

from __future__ import annotations

import json

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from agentbus.errors import BrokerUnavailable

READ_WAIT_MS = 1000


def registry_topic(name: str, replication: int) -> NewTopic:
    # One partition: a queue's last declaration is the one that counts.
    return NewTopic(name, 1, replication, topic_configs={"cleanup.policy": "compact"})


async def record_queue(
    producer: AIOKafkaProducer, topic: str, queue: str, bindings: tuple[str, ...]
) -> None:
    value = json.dumps({"bindings": list(bindings)}).encode()
    try:
        await producer.send_and_wait(topic, value=value, key=queue.encode())
    except KafkaError as exc:
        raise BrokerUnavailable(f"recording queue {queue!r} failed: {exc}") from exc


async def read_queues(bootstrap_servers: str, topic: str) -> dict[str, tuple[str, ...]]:
    """Every queue's latest bindings."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # in no group, so always from the first record
    )
    tp = TopicPartition(topic, 0)
    found: dict[str, tuple[str, ...]] = {}
    try:
        await consumer.start()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=READ_WAIT_MS)
            for record in batch.get(tp, []):
                if record.key is None or record.value is None:
                    continue
                bindings = json.loads(record.value).get("bindings", [])
                found[record.key.decode()] = tuple(str(b) for b in bindings)
    except KafkaError as exc:
        raise BrokerUnavailable(f"reading the declared queues failed: {exc}") from exc
    finally:
        await consumer.stop()
    return found
