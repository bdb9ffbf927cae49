from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentbus.transport.base import Transport
from agentbus.transport.kafka import KafkaTransport
from events import CATALOG
from tests.contract.harness import KafkaHarness


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Transport | None]:
    """The transport a shop runs on: None for the in-process broker, else the real Kafka
    broker's with topics and groups of the test's own, removed afterwards."""
    if request.param == "memory":
        yield None
        return
    kafka = KafkaHarness(request.getfixturevalue("kafka_bootstrap"))
    transport = KafkaTransport(
        kafka.bootstrap, prefix=kafka.prefix, event_types=CATALOG, client_id=f"test-{kafka.run}"
    )
    kafka.transports.append(transport)  # closed before its topics are removed
    try:
        yield transport
    finally:
        await kafka.cleanup()
