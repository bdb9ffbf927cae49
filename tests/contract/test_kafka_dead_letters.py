"""Dead letters on Kafka: listed in place, and redriven back to the service that refused
them. (Kafka only: a consumer group has no queue of its own to send a record back to, so a
redrive goes to the topic the record was first read from.)"""

from __future__ import annotations

from typing import Any

import pytest

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.deadletters import list_dead_letters, redrive
from agentbus.envelope import Event, EventCodec
from agentbus.errors import PermanentError
from agentbus.retry import dead_letter_queue
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.transport.base import Transport
from agentbus.transport.kafka_records import ORIGINAL_OFFSET_HEADER, ORIGINAL_PARTITION_HEADER
from tests.contract.catalog import CATALOG, sample
from tests.contract.harness import KafkaHarness, eventually

pytestmark = pytest.mark.kafka


async def origin_of_only_letter(transport: Transport, queue: str) -> tuple[int, int]:
    """Where the one dead letter of `queue` was read from, left in place."""
    delivery = await transport.get(dead_letter_queue(queue))
    assert delivery is not None
    try:
        headers = delivery.message.headers
        return headers[ORIGINAL_PARTITION_HEADER], headers[ORIGINAL_OFFSET_HEADER]
    finally:
        await delivery.reject(requeue=True)


async def test_a_redriven_dead_letter_reaches_the_service_again_on_its_keys_partition(
    kafka: KafkaHarness,
) -> None:
    consumer_side = kafka.connect()
    await consumer_side.start()
    bus = Bus(consumer_side, EventCodec(CATALOG))
    refusing = True
    seen: list[str] = []
    handled: list[str] = []
    service = Service("redriven")

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        seen.append(event.id)
        if refusing and event.data.key == "bad":
            raise PermanentError("refused for now", code="refused")
        handled.append(event.id)

    consumer = Consumer(service, bus, ConsumerSettings(prefetch=16, concurrency=4))
    await consumer.start()
    bad = sample("order.created", "bad", 1)
    await bus.publish_many([sample("order.created", "fine", 0), bad])
    await eventually(lambda: consumer.stats.dead_lettered == 1, kafka, timeout=20)

    # The commands connect on their own, as another process would.
    operator = kafka.connect()
    await operator.start()
    [letter] = await list_dead_letters(operator, ["redriven"])
    assert (letter.event_id, letter.error_code, letter.queue) == (bad.id, "refused", "redriven")
    first = await origin_of_only_letter(operator, "redriven")

    # Refused again: the redrive reached the service, and on the partition of its key.
    assert await redrive(operator, "redriven") == 1
    await eventually(lambda: consumer.stats.dead_lettered == 2, kafka, timeout=20)
    again = await origin_of_only_letter(operator, "redriven")
    assert again[0] == first[0]
    assert again[1] > first[1]

    refusing = False
    assert await redrive(operator, "redriven") == 1
    await eventually(lambda: bad.id in handled, kafka, timeout=20)
    assert await list_dead_letters(operator, ["redriven"]) == []
    assert seen.count(bad.id) == 3
    await consumer.stop()
