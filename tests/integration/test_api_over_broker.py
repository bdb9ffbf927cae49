"""The HTTP API with the domain services as `agentbus run` processes over real RabbitMQ.

Orders are placed over HTTP, each key sent several times at once: every key gives
exactly one `order.created` on the broker, priced from the catalog that was put
over HTTP too, and the orders' outcome comes back into the API's own projections.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from agentbus.envelope import Event, EventCodec
from events import CATALOG
from tests.integration.chaos import ServiceProcess, exclusive_queues
from tests.integration.test_trace_across_processes import free_port
from tests.support.broker import delete_queues

pytestmark = pytest.mark.rabbitmq

SERVICES = ("api", "inventory", "orders", "payments")
OBSERVER = "test.api.orders"
TOKEN = "integration-token-0123456789"
KEYS = [f"order-key-{n}" for n in range(6)]
COPIES = 3
PRODUCT = {
    "name": "Kettle",
    "description": "Boils water.",
    "category": "kitchen",
    "unit_cost": 5,
    "unit_price": 12.5,
    "lead_time_days": 3,
    "reorder_point": 2,
    "max_stock": 100,
    "supplier": "acme",
}


async def eventually(check: Any, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("not reached in time")
        await asyncio.sleep(0.2)


async def test_orders_over_http_with_repeated_keys_give_one_priced_order_each(
    amqp_url: str, tmp_path: Path
) -> None:
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    port = free_port()
    codec = EventCodec(CATALOG)
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_DATA": str(tmp_path / "data"),
        "AGENTBUS_QUEUE_TYPE": "classic",
        "AGENTBUS_API_TOKENS": f"other-token,{TOKEN}",
        "AGENTBUS_API_PORT": str(port),
    }
    env.pop("DATABASE_URL", None)
    created: list[Event[Any]] = []
    async with exclusive_queues():
        await delete_queues(amqp_url, (*SERVICES, OBSERVER))
        processes = [ServiceProcess(name, env) for name in SERVICES]
        connection = await aio_pika.connect(amqp_url)
        try:
            await asyncio.gather(*(p.start() for p in processes))
            channel = await connection.channel()
            queue = await channel.declare_queue(OBSERVER, auto_delete=True)
            await queue.bind(exchange, routing_key="order.created")

            async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    created.append(codec.decode(message.body))

            await queue.consume(observe)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:
                put = await client.put(
                    "/products/KETTLE", json=PRODUCT, headers={"Idempotency-Key": "product"}
                )
                assert put.status_code == 202, put.text
                receipt = {"sku": "KETTLE", "quantity": 50, "purchase_order_id": None}
                received = await client.post(
                    "/stock/receipts", json=receipt, headers={"Idempotency-Key": "receipt"}
                )
                assert received.status_code == 202, received.text

                async def place(key: str) -> httpx.Response:
                    order = {
                        "customer_id": "c-1",
                        "lines": [{"sku": "KETTLE", "quantity": 2}],
                        "currency": "EUR",
                        "note": None,
                    }
                    return await client.post(
                        "/orders", json=order, headers={"Idempotency-Key": key}
                    )

                answers = await asyncio.gather(*(place(key) for key in KEYS for _ in range(COPIES)))
                assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
                order_ids = {a.json()["order_id"] for a in answers}
                assert len(order_ids) == len(KEYS)
                assert {a.json()["total"] for a in answers} == {25.0}

                async def all_confirmed() -> bool:
                    states = [
                        (await client.get(f"/orders/{order_id}")).json()["status"]
                        for order_id in order_ids
                    ]
                    return all(state == "confirmed" for state in states)

                await eventually(all_confirmed)
                stock = (await client.get("/inventory/KETTLE")).json()
                assert stock == {
                    "sku": "KETTLE",
                    "on_hand": 50 - 2 * len(KEYS),
                    "reserved": 0,
                    "available": 50 - 2 * len(KEYS),
                }
            await asyncio.sleep(1.0)  # a duplicate would have arrived by now
        finally:
            codes = [await process.stop() for process in processes]
            await delete_queues(amqp_url, (*SERVICES, OBSERVER))
            await (await connection.channel()).exchange_delete(exchange)
            await connection.close()
    assert codes == [0] * len(SERVICES), "each drained and exited 0"
    assert sorted(e.data.order_id for e in created) == sorted(order_ids)
    for event in created:
        [line] = event.data.lines
        assert (line.sku, line.quantity, float(line.unit_price)) == ("KETTLE", 2, 12.5)
        assert event.source == "/services/api"
