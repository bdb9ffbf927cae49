"""The development Kafka broker (deploy/dev/services) takes a real client's traffic.

The Kafka transport builds on this broker; this proves it with a plain aiokafka client:
a topic is created, a keyed record with headers goes in, and the same record comes out.
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def test_a_record_round_trips_through_the_broker(kafka_bootstrap: str) -> None:
    topic = f"agentbus.tests.round-trip.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                topic,
                b'{"specversion": "1.0"}',
                key=b"SKU-1",
                headers=[("content-type", b"application/cloudevents+json")],
            )
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{topic}.readers",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            record = await consumer.getone()
        finally:
            await consumer.stop()
    finally:
        await admin.delete_topics([topic])
        await admin.close()

    assert (record.partition, record.offset) == (sent.partition, sent.offset)
    assert record.key == b"SKU-1"
    assert record.value == b'{"specversion": "1.0"}'
    assert dict(record.headers) == {"content-type": b"application/cloudevents+json"}
