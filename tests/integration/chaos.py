"""Exactly-once under faults: services in their own processes, killed and restarted.

The driver publishes a seeded stream with duplicates while it SIGKILLs services
at random moments, then compares the final states with an oracle that knows
nothing of the services' code: a sequential reading of the contract's rules.
The stream keeps the oracle exact: stock decisions depend only on publish order
(inventory applies its queue in order), over-limit orders buy a product nobody
else buys (so their release cannot change another order's fate), and
cancellations name orders before they are placed (the overtaking case).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.transport.rabbitmq import RabbitTransport
from events import (
    CATALOG,
    InventoryAdjusted,
    OrderCancelled,
    OrderCreated,
    ProductUpserted,
    StockReceived,
)

SERVICES = ("inventory", "orders", "payments")
LIMIT = Decimal("5000.00")
START = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Oracle:
    """The contract's rules, read in publish order."""

    on_hand: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def apply(self, event: Event[Any]) -> None:
        if event.id in self.seen:
            return
        self.seen.add(event.id)
        data = event.data
        if event.type == "product.upserted":
            self.on_hand.setdefault(data.sku, 0)
            self.reserved.setdefault(data.sku, 0)
        elif event.type == "stock.received":
            self.on_hand[data.sku] = self.on_hand.get(data.sku, 0) + data.quantity
        elif event.type == "inventory.adjusted":
            if self.on_hand.get(data.sku, 0) + data.delta >= 0:
                self.on_hand[data.sku] = self.on_hand.get(data.sku, 0) + data.delta
            else:
                # Dead-lettered, not applied: a later copy of it gets another try.
                self.seen.discard(event.id)
        elif event.type == "order.cancelled":
            self.orders.setdefault(data.order_id, {"status": "rejected", "reason": "cancelled"})
        elif event.type == "order.created":
            if data.order_id in self.orders:
                return
            wanted: dict[str, int] = {}
            for line in data.lines:
                wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
            if any(q > self.on_hand.get(s, 0) - self.reserved.get(s, 0) for s, q in wanted.items()):
                self.orders[data.order_id] = {"status": "rejected", "reason": "out_of_stock"}
                return
            total = sum(Decimal(x.quantity) * x.unit_price for x in data.lines)
            if total > LIMIT:
                self.orders[data.order_id] = {"status": "rejected", "reason": "payment_failed"}
                return  # reserved, then released: no net change
            for sku, quantity in wanted.items():
                self.on_hand[sku] -= quantity
            self.orders[data.order_id] = {"status": "confirmed", "reason": None}

    def inventory(self) -> dict[str, dict[str, int]]:
        return {
            sku: {
                "on_hand": self.on_hand[sku],
                "reserved": self.reserved.get(sku, 0),
                "available": self.on_hand[sku] - self.reserved.get(sku, 0),
            }
            for sku in sorted(self.on_hand)
        }


def stream(seed: int, events: int, skus: int = 20) -> tuple[list[Event[Any]], int]:
    """A seeded stream with about 10% duplicates; returns it and the duplicate count."""
    rng = random.Random(seed)
    names = [f"SKU-{n:03d}" for n in range(skus)]
    at = START
    out: list[Event[Any]] = []

    def add(data: Any, event_id: str) -> None:
        nonlocal at
        at += timedelta(seconds=30)
        out.append(new_event(data, source="/chaos", id=event_id, time=at))

    for sku in [*names, "LUX-001"]:
        add(
            ProductUpserted(
                sku=sku,
                name=sku,
                description="",
                category="c",
                unit_cost=1,
                unit_price=6000 if sku == "LUX-001" else 10,
                lead_time_days=2,
                reorder_point=5,
                max_stock=100,
                supplier="s",
            ),
            f"p-{sku}",
        )
        add(StockReceived(sku=sku, quantity=1000 if sku == "LUX-001" else 30), f"open-{sku}")
    phantom = 0
    while len(out) < events:
        roll = rng.random()
        n = len(out)
        if roll < 0.70:
            lines = [
                {"sku": s, "quantity": rng.randint(1, 4), "unit_price": 10}
                for s in rng.sample(names, k=rng.choice([1, 1, 2, 3]))
            ]
            add(
                OrderCreated(order_id=f"O-{n}", customer_id="c", lines=lines, currency="EUR"),
                f"oc-{n}",
            )
        elif roll < 0.75:
            add(
                OrderCreated(
                    order_id=f"O-{n}",
                    customer_id="c",
                    currency="EUR",
                    lines=[{"sku": "LUX-001", "quantity": 1, "unit_price": 6000}],
                ),
                f"oc-{n}",
            )
        elif roll < 0.78:
            phantom += 1
            order_id = f"X-{phantom}"
            add(OrderCancelled(order_id=order_id, reason="changed mind"), f"cx-{phantom}")
            add(
                OrderCreated(
                    order_id=order_id,
                    customer_id="c",
                    currency="EUR",
                    lines=[{"sku": rng.choice(names), "quantity": 1, "unit_price": 10}],
                ),
                f"ocx-{phantom}",
            )
        elif roll < 0.95:
            add(StockReceived(sku=rng.choice(names), quantity=rng.randint(5, 15)), f"sr-{n}")
        else:
            add(
                InventoryAdjusted(
                    sku=rng.choice(names), delta=rng.choice([-3, -1, 2]), reason="count"
                ),
                f"adj-{n}",
            )
    duplicates = 0
    result = list(out)
    for event in out:
        if rng.random() < 0.10:
            position = rng.randint(out.index(event) + 1, len(out))
            result.insert(min(position + duplicates, len(result)), event)
            duplicates += 1
    return result, duplicates


@dataclass
class Chaos:
    amqp_url: str
    data_dir: Path
    database_url: str | None = None
    seed: int = 11
    exchange: str = field(default_factory=lambda: f"agentbus.chaos.{uuid.uuid4().hex[:8]}")
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            AMQP_URL=self.amqp_url,
            AGENTBUS_EXCHANGE=self.exchange,
            AGENTBUS_DATA=str(self.data_dir),
            AGENTBUS_RETRY_DELAY="0.2",
            AGENTBUS_MAX_ATTEMPTS="20",
            PAYMENT_LIMIT=str(LIMIT),
        )
        env.pop("AGENTBUS_APP", None)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        else:
            env.pop("DATABASE_URL", None)
        return env

    async def start(self, service: str) -> None:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "run",
            service,
            env=self.env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 60)
        if b"running" not in line:
            rest = await process.stderr.read()
            raise RuntimeError(f"{service} did not start: {(line + rest).decode()[-800:]}")
        self.processes[service] = process
        self.recoveries.append(time.monotonic() - started)
        asyncio.get_running_loop().create_task(_drain(process))

    async def kill(self, service: str) -> None:
        process = self.processes.pop(service)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        self.kills.append(service)

    async def stop_all(self) -> None:
        for service in list(self.processes):
            process = self.processes.pop(service)
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    os.killpg(process.pid, signal.SIGKILL)

    async def clean_broker(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in await _queues():
                if name.split(".")[0] in SERVICES:
                    await channel.queue_delete(name)
            await channel.exchange_delete(self.exchange)

    async def depth(self) -> int:
        total = 0
        for name in await _queues(with_counts=True):
            queue, _, count = name.partition(" ")
            if queue.split(".")[0] in SERVICES and not queue.endswith(".dlq"):
                total += int(count or 0)
        return total

    async def state(self, name: str) -> Any:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "state",
            name,
            "--json",
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return json.loads(out)

    async def run(self, events: int, kills: int) -> dict[str, Any]:
        await self.clean_broker()
        for service in SERVICES:
            await self.start(service)
        produced, duplicates = stream(self.seed, events)
        oracle = Oracle()
        for event in produced:
            oracle.apply(event)
        rng = random.Random(self.seed)
        transport = RabbitTransport(self.amqp_url, exchange=self.exchange, connection_name="chaos")
        await transport.start()
        bus = Bus(transport, EventCodec(CATALOG))
        started = time.monotonic()
        kill_points = sorted(rng.sample(range(1, len(produced) // 100), k=kills))
        try:
            for chunk_number, start in enumerate(range(0, len(produced), 100)):
                await bus.publish_many(produced[start : start + 100])
                while kill_points and kill_points[0] <= chunk_number:
                    kill_points.pop(0)
                    victim = rng.choice(SERVICES)
                    await asyncio.sleep(rng.random() * 0.3)
                    await self.kill(victim)
                    await asyncio.sleep(0.3)
                    await self.start(victim)
            await self.settle()
            seconds = time.monotonic() - started
            inventory = await self.state("inventory")
            orders = await self.state("orders")
        finally:
            await transport.close()
            await self.stop_all()
            await self.clean_broker()
        expected_orders = oracle.orders
        lost = [o for o in expected_orders if o not in orders or orders[o]["status"] == "pending"]
        wrong_orders = {
            o: (orders.get(o), v)
            for o, v in expected_orders.items()
            if o in orders and orders[o] != v
        }
        wrong_stock = {
            s: (inventory.get(s), v) for s, v in oracle.inventory().items() if inventory.get(s) != v
        }
        return {
            "events": len(produced),
            "duplicates": duplicates,
            "kills": len(self.kills),
            "killed": self.kills,
            "recovery_seconds_max": round(max(self.recoveries), 2),
            "orders": len(expected_orders),
            "lost": len(lost),
            "wrong_orders": len(wrong_orders),
            "double_applied_or_wrong_stock": len(wrong_stock),
            "examples": {
                "orders": dict(list(wrong_orders.items())[:3]),
                "stock": dict(list(wrong_stock.items())[:3]),
            },
            "seconds": round(seconds, 1),
            "orders_per_second": round(len(expected_orders) / seconds, 1),
        }

    async def settle(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 4:
            if time.monotonic() > deadline:
                raise TimeoutError("the services did not drain")
            calm = calm + 1 if await self.depth() == 0 else 0
            await asyncio.sleep(0.5)


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    while await process.stderr.read(65536):
        pass


async def _queues(with_counts: bool = False) -> list[str]:
    columns = ["name", "messages"] if with_counts else ["name"]
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        *columns,
        "--quiet",
        "--no-table-headers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return [" ".join(line.split()) for line in out.decode().splitlines() if line.strip()]
