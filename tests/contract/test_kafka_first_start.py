"""A service's first start on a Kafka cluster that has none of its topics yet is quiet.

The platform creates its topics (one per event type of the application's catalog, and
the registry of queues) and writes to them at once. A client that asks for a topic's
metadata before the broker's metadata has caught up with the creation gets "unknown
topic" and aiokafka logs an ERROR on every retry: on a first start that goes well,
an operator would read those lines as a fault. (Kafka only: RabbitMQ declares and
binds in one round trip.)
"""

from __future__ import annotations

import logging

import pytest

from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.transport.base import QueueSpec
from agentbus.transport.kafka import KafkaTransport
from events import CATALOG
from tests.contract.catalog import CATALOG as SAMPLES
from tests.contract.catalog import sample
from tests.contract.harness import KafkaHarness

pytestmark = pytest.mark.kafka


async def test_the_first_start_on_a_fresh_prefix_logs_no_error(
    kafka: KafkaHarness, caplog: pytest.LogCaptureFixture
) -> None:
    transport = KafkaTransport(
        kafka.bootstrap, prefix=kafka.prefix, event_types=CATALOG, client_id="first-start"
    )
    kafka.transports.append(transport)
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        await transport.start()
        await transport.declare(
            [QueueSpec("inventory", bindings=("order.created", "stock.received"))]
        )
        await Bus(transport, EventCodec(SAMPLES)).publish(sample("order.created", "o-1", 1))

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
