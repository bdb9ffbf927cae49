"""The agents as `agentbus run` processes over RabbitMQ, deciding with a real model:
llama.cpp's server over SmolLM2-135M-Instruct, which bounds nothing itself (no token
limit, no repeat penalty). Bounds come from the client: the schema and the token limit.

- The domain services and `agentbus run memory restock-agent substitute-agent` turn
  one order into one `inventory.low` and exactly one `restock.recommended`, made by
  the model and within bounds, and an order for a product that ran out into a
  `substitute.suggested` ranked by the model; in minutes.
- The agent SIGKILLed while the model is answering resumes without a second
  completed call, counted on the server's side of the connection.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.transport.rabbitmq import RabbitTransport
from agents.restock.proposal import MAX_EVIDENCE
from evals.local_model import MODEL, LocalModelServer
from events import CATALOG, OrderCreated, ProductUpserted, StockReceived
from events.orders import OrderLine
from tests.integration.chaos import ServiceProcess, exclusive_queues
from tests.support.broker import delete_queues, low, product
from tests.support.counting_proxy import CountingProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.model]

DOMAIN = ("inventory", "orders", "payments")
AGENTS = ("memory", "restock-agent", "substitute-agent")
OBSERVER = "test.real-model.events"


def catalog(sku: str, name: str, stock: int) -> list[Event[Any]]:
    made = [
        new_event(
            ProductUpserted(
                sku=sku,
                name=name,
                description=f"{name}, for the kitchen.",
                category="kitchen",
                unit_cost=Decimal("10"),
                unit_price=Decimal("25"),
                lead_time_days=3,
                reorder_point=10,
                max_stock=40,
                supplier="acme",
            ),
            source="/test",
        )
    ]
    if stock:
        made.append(new_event(StockReceived(sku=sku, quantity=stock), source="/test"))
    return made


def buy(order_id: str, sku: str, quantity: int) -> Event[Any]:
    return new_event(
        OrderCreated(
            order_id=order_id,
            customer_id="c-1",
            currency="EUR",
            note=None,
            lines=[OrderLine(sku=sku, quantity=quantity, unit_price=Decimal("25"))],
        ),
        source="/test",
    )


class Watch:
    """Every event on the test's exchange, as it arrives."""

    def __init__(self) -> None:
        self.events: list[Event[Any]] = []

    def of_type(self, kind: str) -> list[Event[Any]]:
        return [e for e in self.events if e.type == kind]

    async def until(
        self, condition: Callable[[], bool], timeout: float, *processes: ServiceProcess
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            seen = sorted({e.type for e in self.events})
            logs = "\n".join(p.stderr() for p in processes)
            raise AssertionError(f"not in {timeout}s; seen {seen}\n{logs}") from None


@asynccontextmanager
async def shop_exchange(
    amqp_url: str, owners: tuple[str, ...]
) -> AsyncIterator[tuple[str, Bus, Watch]]:
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    await delete_queues(amqp_url, (*owners, OBSERVER))
    transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
    bus = Bus(transport, EventCodec(CATALOG))
    watch = Watch()
    await transport.start()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, "topic", durable=True)
        queue = await channel.declare_queue(OBSERVER, auto_delete=True)
        await queue.bind(exchange, routing_key="#")

        async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                watch.events.append(bus.codec.decode(message.body))

        await queue.consume(observe)
        yield exchange, bus, watch
    finally:
        await connection.close()
        await transport.close()
        await delete_queues(amqp_url, (*owners, OBSERVER))
        async with await aio_pika.connect(amqp_url) as admin:
            await (await admin.channel()).exchange_delete(exchange)


def environment(amqp_url: str, exchange: str, data: Path, base_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_DATA": str(data),
        "AGENTBUS_QUEUE_TYPE": "classic",
        "AGENTBUS_MODEL": "openai",
        "OPENAI_BASE_URL": base_url,
        "AGENTBUS_OPENAI_MODEL": MODEL,
        "AGENTBUS_MODEL_TIMEOUT": "300",
        "AGENTBUS_EMBEDDINGS": "hashing",
    }
    env.pop("OPENAI_API_KEY", None)
    return env


async def test_the_agents_over_rabbitmq_decide_with_the_real_model(
    amqp_url: str, model_server: LocalModelServer, tmp_path: Path
) -> None:
    async with (
        exclusive_queues(),
        shop_exchange(amqp_url, (*DOMAIN, *AGENTS)) as (
            exchange,
            bus,
            watch,
        ),
    ):
        domain = ServiceProcess(
            DOMAIN[0],
            environment(amqp_url, exchange, tmp_path / "domain", model_server.base_url),
            args=DOMAIN[1:],
        )
        agents = ServiceProcess(
            AGENTS[0],
            environment(amqp_url, exchange, tmp_path / "agents", model_server.base_url),
            args=AGENTS[1:],
        )
        try:
            await asyncio.gather(domain.start(), agents.start())
            await bus.publish_many(
                [
                    *catalog("KET-WHITE", "white electric kettle 1.7 litre", 12),
                    *catalog("KET-BLACK", "black electric kettle 1.7 litre", 20),
                    *catalog("KET-STEEL", "steel electric kettle 1.7 litre", 0),
                ]
            )
            await watch.until(lambda: len(watch.of_type("product.upserted")) == 3, 60)
            await asyncio.sleep(1.0)  # stock received and catalog written
            await bus.publish_many([buy("o-low", "KET-WHITE", 5), buy("o-out", "KET-STEEL", 1)])
            # Minutes, not hours: a small model answers each in seconds.
            await watch.until(
                lambda: (
                    watch.of_type("restock.recommended") and watch.of_type("substitute.suggested")
                ),
                240,
                domain,
                agents,
            )
            await asyncio.sleep(3.0)  # room for a wrong second suggestion to show up
        finally:
            await asyncio.gather(domain.stop(), agents.stop())

    [trigger] = watch.of_type("inventory.low")
    [suggestion] = watch.of_type("restock.recommended")
    data = suggestion.data
    assert data.trigger_event_id == trigger.id
    assert data.model == MODEL, f"the policy decided, not the model: {data.model}\n" + "\n".join(
        line for line in agents.stderr().splitlines() if "the policy decides" in line
    )
    assert 1 <= data.quantity <= 3 * 40
    assert 0.0 <= data.confidence <= 1.0
    assert len(data.evidence) <= MAX_EVIDENCE
    assert trigger.id in data.evidence
    [offer] = watch.of_type("substitute.suggested")
    assert offer.data.model == MODEL
    assert offer.data.order_id == "o-out"
    assert {s.sku for s in offer.data.substitutes} <= {"KET-WHITE", "KET-BLACK"}


async def test_an_agent_killed_while_the_model_answers_makes_no_second_completed_call(
    amqp_url: str, model_server: LocalModelServer, tmp_path: Path
) -> None:
    first, second = "SKU-REAL-A", "SKU-REAL-B"
    async with (
        exclusive_queues(),
        shop_exchange(amqp_url, ("restock-agent",)) as (exchange, bus, watch),
        CountingProxy(model_server.base_url) as proxy,
    ):
        env = environment(amqp_url, exchange, tmp_path / "agent", proxy.base_url)
        agent = ServiceProcess("restock-agent", env)
        triggers = {sku: low(sku) for sku in (first, second)}
        try:
            # Answers for the first trigger the agent asks about go through (retries
            # too); those for the other are held at the proxy once the server has
            # given them, so the kill lands while that call is being answered.
            asked_first: list[str] = []

            def other_trigger(body: bytes) -> bool:
                found = re.search(rb"trigger_id\W+([0-9a-f-]{36})", body)
                assert found is not None, "the prompt names its trigger"
                asked_first[:] = asked_first or [found[1].decode()]
                return found[1].decode() != asked_first[0]

            proxy.hold_when(other_trigger)
            await agent.start()
            await bus.publish_many([product(sku) for sku in triggers])
            await asyncio.sleep(1.0)
            await bus.publish_many(list(triggers.values()))
            # Kill once one answer was acted on (its suggestion is on the bus, so the
            # agent has recorded it) and another call is at the proxy. Waiting only for
            # the proxy to deliver an answer raced the agent recording it: a kill in
            # between rightly asks again.
            await watch.until(
                lambda: len(watch.of_type("restock.recommended")) >= 1 and proxy.in_flight >= 1,
                240,
                agent,
            )
            await agent.kill()
            proxy.release()
            assert proxy.completed < len(triggers), "every answer came before the kill"
            calls_before_restart = proxy.calls
            await agent.start()
            await bus.publish_many(list(triggers.values()))  # duplicates change nothing
            await watch.until(lambda: len(watch.of_type("restock.recommended")) >= 2, 240)
            await asyncio.sleep(3.0)
        finally:
            await agent.stop()

    suggestions = watch.of_type("restock.recommended")
    by_trigger: dict[str, set[str]] = {}
    for suggestion in suggestions:
        by_trigger.setdefault(str(suggestion.data.trigger_event_id), set()).add(suggestion.id)
    assert set(by_trigger) == {event.id for event in triggers.values()}
    assert all(len(ids) == 1 for ids in by_trigger.values()), by_trigger
    assert all(s.data.model == MODEL for s in suggestions)
    # One completed call per trigger: what was answered before the kill was not asked
    # again; what was cut off by it was asked once more.
    assert proxy.completed == len(triggers)
    assert proxy.calls > calls_before_restart
