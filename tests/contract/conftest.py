from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.harness import Harness, KafkaHarness, MemoryHarness, RabbitHarness


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    if request.param == "kafka":
        kafka = KafkaHarness(request.getfixturevalue("kafka_bootstrap"))
        try:
            yield kafka
        finally:
            await kafka.cleanup()
        return
    url = request.getfixturevalue("amqp_url")
    rabbit = RabbitHarness(url)
    try:
        yield rabbit
    finally:
        await rabbit.cleanup()
