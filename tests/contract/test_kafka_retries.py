"""Retries on Kafka, where a record cannot be sent back: it is held in place and its
partition waits while the others go on. (Kafka only: AMQP retries through delay queues,
which the transport contract covers on every broker.)"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec
from agentbus.errors import TransientError
from agentbus.retry import RetryPolicy
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import KafkaHarness, eventually

pytestmark = pytest.mark.kafka

PARTITIONS = 6


def partition_of(key: str) -> int:
    # The producer's own partitioner, so the test knows which keys share a partition.
    every = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), every, every))


def key_on(partition: int, *, other_than: str) -> str:
    return next(
        key
        for n in range(10_000)
        if (key := f"k{n}") != other_than and (partition_of(key) == partition)
    )


async def test_a_retry_holds_its_partition_while_the_others_go_on(kafka: KafkaHarness) -> None:
    transport = kafka.connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    stuck = "stuck"
    same = key_on(partition_of(stuck), other_than=stuck)
    other = key_on((partition_of(stuck) + 1) % PARTITIONS, other_than=stuck)
    handled: list[tuple[str, int]] = []
    failures = 0
    service = Service("held")

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        nonlocal failures
        if event.data.key == stuck and failures < 2:
            failures += 1
            raise TransientError("the database is away")
        handled.append((event.data.key, event.data.seq))

    policy = RetryPolicy(max_attempts=5, base_delay=1.0, factor=2.0)
    consumer = Consumer(service, bus, ConsumerSettings(prefetch=64, concurrency=8, retry=policy))
    await consumer.start()
    await bus.publish(sample("order.created", stuck, 1))
    await eventually(lambda: failures == 1, kafka, timeout=20)
    # Published while the stuck record waits for its retry (1 s, then 2 s more).
    await bus.publish_many([sample("order.created", same, 2), sample("order.created", other, 3)])
    await eventually(lambda: (other, 3) in handled, kafka, timeout=2.5)
    assert (same, 2) not in handled, "a record behind the held one was fetched and handled"
    await eventually(lambda: len(handled) == 3, kafka, timeout=15)
    await consumer.stop()
    assert failures == 2
    assert handled.index((stuck, 1)) < handled.index((same, 2)), handled
    assert consumer.stats.retried == 2
    assert consumer.stats.dead_lettered == 0
