"""The restock agent in a process of its own over RabbitMQ, SIGKILLed mid-run: each
`inventory.low` still yields exactly one `restock.recommended`, and no model call that
completed is made again (the local OpenAI-compatible server counts them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec
from agentbus.transport.rabbitmq import RabbitTransport
from events import CATALOG
from tests.integration.chaos import ServiceProcess, exclusive_queues
from tests.support.broker import delete_queues, low, product
from tests.support.openai_server import FakeOpenAI

pytestmark = pytest.mark.rabbitmq

FAST = "SKU-FAST"  # its model call answers at once, before the kill
SLOW = [f"SKU-SLOW-{n}" for n in range(4)]  # theirs hang until the agent is killed
MID = "SKU-MID"  # answered, but killed before its run commits
OBSERVER = "test.agent-sigkill.suggestions"


def decided(data: Path, trigger_id: str) -> bool:
    """Whether the run's decide node has its result checkpointed."""
    path = data / "restock_agent_checkpoints.db"
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(str(path))) as connection:
        try:
            row = connection.execute(
                "SELECT count(*) FROM writes WHERE thread_id = ? AND channel = 'proposal'",
                (f"restock-agent:{trigger_id}",),
            ).fetchone()
        except sqlite3.OperationalError:
            return False  # not created yet
    return bool(row and row[0])


async def test_an_agent_killed_mid_run_makes_one_suggestion_per_trigger_and_no_call_twice(
    amqp_url: str, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    data = tmp_path / "data"
    # The agent's own database, locked by the test so that MID's run cannot commit.
    locks: list[sqlite3.Connection] = []

    async def planner(body: dict[str, Any]) -> dict[str, Any]:
        found = re.search(r'"sku":\s*"([^"]+)"', body["messages"][-1]["content"])
        assert found is not None
        if found.group(1) == MID:
            lock = sqlite3.connect(str(data / "restock_agent.db"), isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            locks.append(lock)
        elif found.group(1) != FAST and not gate.is_set():
            await gate.wait()
        return {
            "quantity": 30,
            "urgency": "medium",
            "rationale": "cover the lead time and a week",
            "confidence": 0.7,
            "evidence": [],
        }

    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    async with exclusive_queues(), FakeOpenAI(responder=planner) as server:
        await delete_queues(amqp_url, ("restock-agent", OBSERVER))
        env = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "AGENTBUS_EXCHANGE": exchange,
            "AGENTBUS_DATA": str(data),
            "AGENTBUS_QUEUE_TYPE": "classic",
            "AGENTBUS_MODEL": "openai",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "test",
        }
        agent = ServiceProcess("restock-agent", env)
        transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
        bus = Bus(transport, EventCodec(CATALOG))
        suggestions: list[Event[Any]] = []
        try:
            await agent.start()
            await transport.start()
            connection = await aio_pika.connect(amqp_url)
            channel = await connection.channel()
            queue = await channel.declare_queue(OBSERVER, auto_delete=True)
            await queue.bind(exchange, routing_key="restock.recommended")

            async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    suggestions.append(bus.codec.decode(message.body))

            await queue.consume(observe)
            triggers = {sku: low(sku) for sku in [FAST, *SLOW, MID]}
            await bus.publish_many([product(sku) for sku in triggers])
            first = [triggers[sku] for sku in [FAST, *SLOW]]
            await bus.publish_many([*first, triggers[FAST], triggers[SLOW[0]]])

            async def until(condition: Any, timeout: float = 60) -> None:
                # Conditions span the server, the consumer and a subprocess: poll them.
                async with asyncio.timeout(timeout):
                    while not condition():  # noqa: ASYNC110
                        await asyncio.sleep(0.05)

            # The fast run is done; the four slow ones are waiting on the model.
            await until(lambda: any(s.data.sku == FAST for s in suggestions))
            await until(lambda: len(server.calls) >= 1 + len(SLOW))
            # MID's call completes and its decision is checkpointed, but the run
            # cannot commit: the kill lands between the model call and the commit.
            await bus.publish_many([triggers[MID]])
            await until(lambda: decided(data, triggers[MID].id))
            await agent.kill()
            for lock in locks:
                lock.execute("ROLLBACK")
                lock.close()
            gate.set()  # the slow answers now reach a dead process: not completed
            await agent.start()
            await bus.publish_many([triggers[FAST], triggers[SLOW[1]]])  # more duplicates
            await until(lambda: len({s.data.sku for s in suggestions}) == len(triggers))
            await asyncio.sleep(2.0)  # room for a wrong second suggestion to show up
            await connection.close()
        finally:
            await agent.stop()
            await transport.close()
            await delete_queues(amqp_url, ("restock-agent", OBSERVER))
            async with await aio_pika.connect(amqp_url) as admin:
                await (await admin.channel()).exchange_delete(exchange)

    by_trigger: dict[str, set[str]] = {}
    for suggestion in suggestions:
        by_trigger.setdefault(str(suggestion.data.trigger_event_id), set()).add(suggestion.id)
    assert set(by_trigger) == {event.id for event in triggers.values()}
    assert all(len(ids) == 1 for ids in by_trigger.values()), by_trigger
    # One completed call per trigger: neither the fast run's nor MID's (answered, not
    # committed) was made again after the restart; the slow runs' calls never
    # completed, so each was made once more.
    assert server.completed == len(triggers)
    assert len(server.calls) == len(triggers) + len(SLOW)
