"""The inventory service, in its own process on PostgreSQL over RabbitMQ, keeps going
through a restart of the broker and then of the database, with nothing lost and
nothing applied twice, and nobody touching it.

A publisher sends a steady stream of `stock.received` while the broker
application is restarted (`rabbitmqctl stop_app`/`start_app`: every connection
drops, queues come back from disk) and later PostgreSQL is restarted. The
publisher re-sends what the broker did not confirm, with the same event ids.
At the end the SKU's stock must equal the sum of the quantities sent.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from agentbus.bus import Bus
from agentbus.envelope import EventCodec, new_event
from agentbus.transport.rabbitmq import RabbitTransport
from events import CATALOG, ProductUpserted, StockReceived
from tests.integration.chaos import ServiceProcess, exclusive_queues, publish_surely, queue_names

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

EVENTS = 600
SKU = "RESTART-SKU"


async def command(*args: str, timeout: float = 120) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, (args, out.decode()[-500:], err.decode()[-500:])


async def restart_broker() -> None:
    await command("rabbitmqctl", "stop_app")
    await command("rabbitmqctl", "start_app")
    await command("rabbitmqctl", "await_startup")


async def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    await command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart")


def on_hand(url: str) -> int | None:
    with psycopg.connect(url, autocommit=True) as connection:
        try:
            row = connection.execute(
                "SELECT on_hand FROM inventory.stock WHERE sku = %s", (SKU,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return None if row is None else int(row[0])


async def test_inventory_survives_broker_and_database_restarts(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    name = f"agentbus_restart_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "DATABASE_URL": url,
        "AGENTBUS_EXCHANGE": exchange,
        "AGENTBUS_DATA": str(tmp_path),
        "AGENTBUS_RETRY_DELAY": "0.5",
        "AGENTBUS_MAX_ATTEMPTS": "50",
    }
    quantities = [1 + n % 3 for n in range(EVENTS)]
    stream = [
        new_event(StockReceived(sku=SKU, quantity=q), source="/test", id=f"restart-{n}")
        for n, q in enumerate(quantities)
    ]
    async with exclusive_queues():
        for queue in await queue_names():
            if queue == "inventory" or queue.startswith("inventory."):
                await command("rabbitmqctl", "delete_queue", queue)
        service = ServiceProcess("inventory", env)
        transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="restart-test")
        bus = Bus(transport, EventCodec(CATALOG))
        try:
            await service.start()
            await transport.start()
            await publish_surely(
                bus,
                [
                    new_event(
                        ProductUpserted(
                            sku=SKU,
                            name="kettle",
                            description="A kettle.",
                            category="kitchen",
                            unit_cost=Decimal(5),
                            unit_price=Decimal(10),
                            lead_time_days=2,
                            reorder_point=1,
                            max_stock=10_000,
                            supplier="acme",
                        ),
                        source="/test",
                    )
                ],
            )
            for n, event in enumerate(stream):
                await publish_surely(bus, [event])
                if n == EVENTS // 3:
                    await restart_broker()
                elif n == 2 * EVENTS // 3:
                    await restart_postgres()
                await asyncio.sleep(0.002)
            expected = sum(quantities)
            async with asyncio.timeout(180):
                while (await asyncio.to_thread(on_hand, url)) != expected:
                    assert service.alive, service.stderr()
                    await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # room for a double-applied redelivery to show
            assert await asyncio.to_thread(on_hand, url) == expected
            assert service.alive, "the service never needed a hand"
        finally:
            code = await service.stop()
            await transport.close()
            for queue in await queue_names():
                if queue == "inventory" or queue.startswith("inventory."):
                    await command("rabbitmqctl", "delete_queue", queue)
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert code == 0, service.stderr()
