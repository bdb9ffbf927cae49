"""The review console, unchanged, over a real Kafka broker: `agentbus run review` as a
process with KAFKA_BOOTSTRAP_SERVERS set instead of AMQP_URL. A suggestion arrives on
Kafka as an agent would publish it, a reviewer approves it over HTTP, and the approval
is on Kafka for the services that act on it."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.transport.kafka import KafkaTransport
from consumers.review.auth import hash_password
from events import CATALOG
from tests.contract.harness import KafkaHarness
from tests.integration.test_agents_kafka import started
from tests.integration.test_cli_broker import finish
from tests.review.test_console import PASSWORDS, Browserless, suggestion
from tests.support.broker import product

pytestmark = pytest.mark.kafka


async def test_a_suggestion_from_kafka_is_approved_over_http_and_the_approval_is_on_kafka(
    kafka: KafkaHarness, tmp_path: Path
) -> None:
    port = 18000 + uuid.uuid4().int % 2000
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGENTBUS_KAFKA_PREFIX": kafka.prefix,
        "AGENTBUS_DATA": str(tmp_path / "review"),
        "REVIEW_USERS": f"alice:{hash_password(PASSWORDS['alice'])}",
        "REVIEW_SECRET": "kafka-test-secret",
        "REVIEW_PORT": str(port),
        # Plain HTTP on the loopback: a client keeps Secure cookies for HTTPS only.
        "REVIEW_COOKIE_SECURE": "false",
    }
    env.pop("AMQP_URL", None)
    console = await started(env, "run", "review", ready=b"running")
    transport = KafkaTransport(kafka.bootstrap, prefix=kafka.prefix, event_types=list(CATALOG))
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    alice = Browserless(f"http://127.0.0.1:{port}")
    approvals = AIOKafkaConsumer(
        f"{kafka.prefix}restock.approved",
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
    )
    await approvals.start()
    try:
        await bus.publish_many([product("SKU-A"), suggestion(1)])
        assert (await alice.sign_in("alice", PASSWORDS["alice"])).status_code == 303
        for _ in range(120):
            if "rec-1" in (await alice.client.get("/")).text:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("the suggestion never reached the console")
        done = await alice.decide("rec-1", "approve", quantity="42", note="pallet size")
        assert done.status_code == 303
        records = []
        for _ in range(60):
            batch = await approvals.getmany(timeout_ms=500)
            records += [record for found in batch.values() for record in found]
            if records:
                break
        [record] = records
        approved = bus.codec.decode(
            record.value or b"",
            content_type=dict(record.headers)["content-type"].decode(),
            headers={},
            header_prefix="ce_",
        )
        assert approved.type == "restock.approved"
        assert (approved.data.quantity, approved.data.reviewer) == (42, "alice")
        assert approved.data.note == "pallet size"
        assert approved.causationid == "suggestion-1"
        assert record.key == approved.subject.encode()
        again = await alice.decide("rec-1", "approve", quantity="1")
        assert again.status_code == 409
        assert not await approvals.getmany(timeout_ms=1500), "a second approval event"
    finally:
        await alice.client.aclose()
        await approvals.stop()
        await transport.close()
        if console.returncode is None:
            console.send_signal(signal.SIGINT)
        code, _, err = await finish(console)
    assert code == 0, err
