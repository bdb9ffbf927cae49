"""One business flow, one trace, across four processes over real RabbitMQ.

inventory, orders, payments and the restock agent run as separate `agentbus run`
processes exporting spans over OTLP/HTTP to a receiver this test runs. One order
takes a SKU below its reorder point; the spans must form one trace whose parent
links run from the test's `order.created` publish to the `restock.recommended`
publish. Each service also serves /metrics, /healthz and /readyz, checked here
on the real processes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.telemetry import use_tracer_provider
from agentbus.transport.rabbitmq import RabbitTransport
from events import CATALOG, OrderCreated, ProductUpserted, StockReceived
from events.orders import OrderLine
from tests.integration.chaos import ServiceProcess, exclusive_queues
from tests.support.broker import delete_queues
from tests.support.openai_server import FakeOpenAI
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.rabbitmq

SERVICES = ("inventory", "orders", "payments", "restock-agent")
SKU = "SKU-TRACE"
OBSERVER = "test.trace.suggestions"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shop_events() -> tuple[list[Event[Any]], Event[Any]]:
    setup = [
        new_event(
            ProductUpserted(
                sku=SKU,
                name="Traced kettle",
                description="A kettle.",
                category="kitchen",
                unit_cost=Decimal("5"),
                unit_price=Decimal("10"),
                lead_time_days=3,
                reorder_point=20,
                max_stock=100,
                supplier="acme",
            ),
            source="/test",
        ),
        new_event(StockReceived(sku=SKU, quantity=25), source="/test"),
    ]
    order = new_event(
        OrderCreated(
            order_id="order-traced",
            customer_id="c-1",
            currency="EUR",
            lines=[OrderLine(sku=SKU, quantity=10, unit_price=Decimal("10"))],
        ),
        source="/test",
    )
    return setup, order


def routing_key(span: ReceivedSpan) -> Any:
    return span.attributes.get("messaging.rabbitmq.destination.routing_key")


async def test_an_order_and_the_suggestion_it_led_to_share_one_trace(
    amqp_url: str, tmp_path: Path
) -> None:
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    local = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(local))

    async def planner(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "quantity": 60,
            "urgency": "high",
            "rationale": "cover the lead time",
            "confidence": 0.8,
            "evidence": [],
        }

    with OtlpReceiver() as receiver:
        async with exclusive_queues(), FakeOpenAI(responder=planner) as model_server:
            await delete_queues(amqp_url, (*SERVICES, OBSERVER))
            env = {
                **os.environ,
                "AMQP_URL": amqp_url,
                "AGENTBUS_EXCHANGE": exchange,
                "AGENTBUS_DATA": str(tmp_path / "data"),
                "AGENTBUS_QUEUE_TYPE": "classic",
                "AGENTBUS_MODEL": "openai",
                "OPENAI_BASE_URL": model_server.base_url,
                "OPENAI_API_KEY": "test",
                "AGENTBUS_MODEL_PRICES": '{"gpt-4o-mini": [0.15, 0.6]}',
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
            ports = {name: free_port() for name in SERVICES}
            processes = [
                ServiceProcess(name, env, args=["--metrics-port", str(ports[name])])
                for name in SERVICES
            ]
            transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
            bus = Bus(transport, EventCodec(CATALOG))
            suggestions: list[Event[Any]] = []
            use_tracer_provider(provider)
            try:
                await asyncio.gather(*(p.start() for p in processes))
                async with httpx.AsyncClient() as client:
                    for name, port in ports.items():
                        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
                        assert ready.status_code == 200, (name, ready.text)
                await transport.start()
                connection = await aio_pika.connect(amqp_url)
                channel = await connection.channel()
                queue = await channel.declare_queue(OBSERVER, auto_delete=True)
                await queue.bind(exchange, routing_key="restock.recommended")

                async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    async with message.process():
                        suggestions.append(bus.codec.decode(message.body))

                await queue.consume(observe)
                setup, order = shop_events()
                await bus.publish_many(setup)
                await asyncio.sleep(1.0)  # catalog and stock first, as a shop would have them
                await bus.publish(order)
                async with asyncio.timeout(60):
                    while not suggestions:  # noqa: ASYNC110 - filled by another task
                        await asyncio.sleep(0.05)
                async with httpx.AsyncClient() as client:
                    scraped = await client.get(f"http://127.0.0.1:{ports['restock-agent']}/metrics")
                await connection.close()
            finally:
                use_tracer_provider(None)
                codes = await asyncio.gather(*(p.stop() for p in processes))
                await transport.close()
                await delete_queues(amqp_url, (*SERVICES, OBSERVER))
                async with await aio_pika.connect(amqp_url) as admin:
                    await (await admin.channel()).exchange_delete(exchange)
        assert codes == [0, 0, 0, 0], [p.stderr() for p in processes]
        received = list(receiver.spans)

    [published] = [
        s
        for s in local.get_finished_spans()
        if (s.attributes or {}).get("messaging.rabbitmq.destination.routing_key") == "order.created"
    ]
    trace_id = f"{published.context.trace_id:032x}"
    flow = [s for s in received if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in flow}

    def one(name: str, service: str, key: str | None = None) -> ReceivedSpan:
        found = [
            s
            for s in flow
            if s.name == name
            and s.service == f"agentbus-{service}"
            and (key is None or routing_key(s) == key)
        ]
        assert len(found) == 1, (name, service, key, sorted({(s.service, s.name) for s in flow}))
        return found[0]

    def ancestors(span: ReceivedSpan) -> list[str]:
        chain: list[str] = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(span.span_id)
        return chain

    in_inventory = one(f"process {exchange}:order.created:inventory", "inventory")
    assert in_inventory.parent_id == f"{published.context.span_id:016x}"
    low_published = one(f"publish {exchange}:inventory.low", "inventory", "inventory.low")
    assert low_published.parent_id == in_inventory.span_id
    in_agent = one(f"process {exchange}:inventory.low:restock-agent", "restock-agent")
    assert in_agent.parent_id == low_published.span_id
    invoke = one("invoke_agent restock-agent", "restock-agent")
    assert invoke.parent_id == in_agent.span_id
    chat = one("chat gpt-4o-mini", "restock-agent")
    assert invoke.span_id in ancestors(chat)
    assert by_id[chat.parent_id].name == "node decide"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["agentbus.gen_ai.usage.cost_usd"] > 0
    suggested = one(f"publish {exchange}:restock.recommended", "restock-agent")
    assert suggested.parent_id == invoke.span_id
    [suggestion] = suggestions
    assert suggestion.traceparent is not None
    assert suggestion.traceparent.split("-")[1] == trace_id
    # The other services of the flow joined the same trace.
    assert {"agentbus-orders", "agentbus-payments"} <= {s.service for s in flow}

    assert scraped.status_code == 200
    assert "agentbus_agent_model_calls_total" in scraped.text
    assert "gen_ai_client_token_usage" in scraped.text
