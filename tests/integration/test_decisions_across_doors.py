"""One decision per suggestion, whichever door it comes through.

The review console and the HTTP API run as `agentbus run` processes over real RabbitMQ
and share one PostgreSQL database, as in a deployment (compose, Helm), or one SQLite
folder.
Each suggestion is approved through both at the same moment: exactly one door wins,
the other answers 409, one decision event reaches the broker, and the console's audit
log holds both attempts.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import sqlalchemy as sa

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.store import open_database
from agentbus.transport.rabbitmq import RabbitTransport
from consumers.review import readmodel
from events import CATALOG, RestockRecommended
from tests.integration.chaos import (
    ServiceProcess,
    create_database,
    drop_database,
    exclusive_queues,
)
from tests.integration.test_trace_across_processes import free_port
from tests.support.broker import delete_queues

pytestmark = pytest.mark.rabbitmq

SERVICES = ("review", "api")
OBSERVER = "test.decisions.observer"
API_TOKEN = "decisions-api-token-0123456789"
REVIEW_TOKEN = "decisions-review-token-0123456789"
SUGGESTIONS = 8


def suggestion(n: int) -> Event[Any]:
    return new_event(
        RestockRecommended(
            recommendation_id=f"both-{n}",
            sku=f"SKU-{n}",
            quantity=30,
            urgency="high",
            rationale="Cover the lead time.",
            evidence=[],
            confidence=0.8,
            agent="restock-agent",
            model="policy",
            prompt_version="restock/v1",
            trigger_event_id=f"low-{n}",
        ),
        source="/services/restock-agent",
        id=f"both-suggestion-{n}",
    )


async def eventually(check: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("not reached in time")
        await asyncio.sleep(0.2)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str | None]:
    """None for SQLite files under one AGENTBUS_DATA, else a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    server: str = request.getfixturevalue("database_url")
    name = f"agentbus_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(server, name)
    try:
        yield url
    finally:
        await drop_database(server, name)


async def test_a_suggestion_approved_through_both_doors_at_once_is_decided_once(
    amqp_url: str, tmp_path: Path, shared_database: str | None
) -> None:
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    api_port, review_port = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_DATA": str(data),
        "AGENTBUS_QUEUE_TYPE": "classic",
        "AGENTBUS_API_TOKENS": API_TOKEN,
        "AGENTBUS_API_PORT": str(api_port),
        "REVIEW_TOKEN": REVIEW_TOKEN,
        "REVIEW_PORT": str(review_port),
        # Plain http on 127.0.0.1: a client other than a browser keeps no Secure cookie.
        "REVIEW_COOKIE_SECURE": "false",
    }
    env.pop("DATABASE_URL", None)
    if shared_database is not None:
        env["DATABASE_URL"] = shared_database
    codec = EventCodec(CATALOG)
    decisions: list[Event[Any]] = []
    async with exclusive_queues():
        await delete_queues(amqp_url, (*SERVICES, OBSERVER))
        processes = [ServiceProcess(name, env) for name in SERVICES]
        connection = await aio_pika.connect(amqp_url)
        transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
        try:
            await asyncio.gather(*(p.start() for p in processes))
            channel = await connection.channel()
            topic = await channel.declare_exchange(
                exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(OBSERVER, auto_delete=True)
            for decision in ("restock.approved", "restock.rejected"):
                await queue.bind(topic, routing_key=decision)

            async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    decisions.append(codec.decode(message.body))

            await queue.consume(observe)
            await transport.start()
            await Bus(transport, codec).publish_many([suggestion(n) for n in range(SUGGESTIONS)])

            api = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=30,
            )
            console = httpx.AsyncClient(base_url=f"http://127.0.0.1:{review_port}", timeout=30)
            async with api, console:
                await _sign_in(console)

                async def both_listed() -> bool:
                    listed = (await api.get("/suggestions", params={"status": "pending"})).json()
                    pages = [
                        await console.get(f"/suggestions/both-{n}") for n in range(SUGGESTIONS)
                    ]
                    return len(listed) == SUGGESTIONS and all(p.status_code == 200 for p in pages)

                await eventually(both_listed)
                tokens = [
                    await _csrf(console, f"/suggestions/both-{n}") for n in range(SUGGESTIONS)
                ]

                async def through_api(n: int) -> int:
                    answer = await api.post(
                        f"/suggestions/both-{n}/approve",
                        json={"quantity": 11, "note": "over the API"},
                        headers={"Idempotency-Key": f"approve-{n}"},
                    )
                    return answer.status_code

                async def through_console(n: int) -> int:
                    answer = await console.post(
                        f"/suggestions/both-{n}/approve",
                        data={"csrf": tokens[n], "quantity": "22", "note": "in the console"},
                    )
                    return answer.status_code

                answers = await asyncio.gather(
                    *(
                        asyncio.gather(through_api(n), through_console(n))
                        for n in range(SUGGESTIONS)
                    )
                )

                async def every_decision_arrived() -> bool:
                    return len({d.data.recommendation_id for d in decisions}) == SUGGESTIONS

                await eventually(every_decision_arrived)
                await asyncio.sleep(2.0)  # a second decision would have arrived by now
        finally:
            await transport.close()
            codes = [await process.stop() for process in processes]
            await delete_queues(amqp_url, (*SERVICES, OBSERVER))
            await (await connection.channel()).exchange_delete(exchange)
            await connection.close()

    # Each pair: one door won (the API's 200, the console's redirect), the other lost.
    wins = {200: "api", 303: "console"}
    for api_status, console_status in answers:
        assert sorted([api_status, console_status]) in ([200, 409], [303, 409]), answers
    won_by = [wins[a] if a in wins else wins[c] for a, c in answers]
    by_suggestion: dict[str, list[Event[Any]]] = {}
    for decision in decisions:
        by_suggestion.setdefault(decision.data.recommendation_id, []).append(decision)
    assert sorted(by_suggestion) == sorted(f"both-{n}" for n in range(SUGGESTIONS))
    for n, door in enumerate(won_by):
        [decision] = by_suggestion[f"both-{n}"]
        assert decision.data.quantity == (11 if door == "api" else 22), (n, door, decision)
    # Every attempt, won or lost, through either door, is in the one audit log.
    rows = await _audit(data, shared_database)
    for n in range(SUGGESTIONS):
        actions = sorted(action for action, target in rows if target == f"both-{n}")
        assert actions == ["approved", "decision_refused"], (n, rows)
    assert codes == [0, 0]


async def _audit(data: Path, url: str | None) -> list[tuple[str, str]]:
    """The console's audit log: its decisions and refusals, (action, suggestion)."""
    database = open_database(readmodel.NAME, EventCodec(CATALOG), url=url, data_dir=data)
    table = readmodel.audit

    def read(connection: sa.Connection) -> list[tuple[str, str]]:
        query = (
            sa.select(table.c.action, table.c.target)
            .where(table.c.action.in_(["approved", "decision_refused"]))
            .order_by(table.c.seq)
        )
        return [(row.action, row.target) for row in connection.execute(query)]

    try:
        return await database.read(read)
    finally:
        await database.close()


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient) -> None:
    token = await _csrf(client, "/login")
    signed = await client.post(
        "/login", data={"user": "token", "password": REVIEW_TOKEN, "csrf": token, "next": "/"}
    )
    assert signed.status_code == 303, signed.text[:500]
