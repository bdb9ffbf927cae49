"""Orders per second through the whole shop, against what this machine's broker allows.

The shop: inventory, orders, payments, shipping and notifications, each its own
`agentbus run` process over RabbitMQ, on SQLite files or on PostgreSQL. A
simulated shop publishes its catalog and stock (untimed), then N orders of 1-3
lines as fast as the broker confirms them; each order is timed from its publish
until its `order.confirmed` (or `order.rejected`) reaches a tap on the exchange.

The ceiling, in the same run: one plain aio-pika process per service, with the
service's own queue (quorum, bound to the same event types) and prefetch, that
answers each delivery with the event the service would publish at that hop
(order.created -> inventory.reserved -> payment.authorized -> order.confirmed
-> shipment.prepared), confirmed by the broker, then acks it: the same messages
per order through the same hops, with no work.

Prints JSON per database: orders/s, p50 and p99 latency (ms), the ceiling's
orders/s and latencies, the ratio of the two, and the events per order each run
published (they should match).

    uv run python benchmarks/shop_throughput.py --orders 3000
    uv run python benchmarks/shop_throughput.py --orders 3000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the driver lives in tests/

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.transport.rabbitmq import RabbitTransport
from consumers.app import app
from events import CATALOG, OrderCreated, OrderLine, ProductUpserted, StockReceived
from tests.integration.chaos import (
    ServiceProcess,
    clean_broker,
    create_database,
    drop_database,
    exclusive_queues,
)

SERVICES = ("inventory", "orders", "payments", "shipping", "notifications")
# What each service publishes at the hop it takes on a confirmed order's path.
ANSWERS = {
    "inventory": {"order.created": "inventory.reserved"},
    "payments": {"inventory.reserved": "payment.authorized"},
    "orders": {"payment.authorized": "order.confirmed"},
    "shipping": {"order.confirmed": "shipment.prepared"},
    "notifications": {},
}
DONE = ("order.confirmed", "order.rejected")
SKUS = 200
PREFETCH = 256
console = Console(stderr=True)


def catalog() -> list[Event[Any]]:
    events: list[Event[Any]] = []
    for n in range(SKUS):
        sku = f"S-{n:04d}"
        product = ProductUpserted(
            sku=sku,
            name=f"Item {n}",
            description="",
            category="bench",
            unit_cost=Decimal("2.00"),
            unit_price=Decimal("5.00"),
            lead_time_days=3,
            reorder_point=1,
            max_stock=10_000_000,
            supplier="bench",
        )
        events.append(new_event(product, source="/bench"))
        received = StockReceived(sku=sku, quantity=1_000_000, purchase_order_id=None)
        events.append(new_event(received, source="/bench"))
    return events


def orders(count: int, seed: int) -> list[Event[Any]]:
    pick = random.Random(seed)
    made: list[Event[Any]] = []
    for n in range(count):
        skus = pick.sample(range(SKUS), pick.randint(1, 3))
        lines = [
            OrderLine(sku=f"S-{s:04d}", quantity=pick.randint(1, 3), unit_price=Decimal("5.00"))
            for s in skus
        ]
        order = OrderCreated(
            order_id=f"o-{seed}-{n}",
            customer_id=f"c-{n % 97}",
            lines=lines,
            currency="EUR",
            note=None,
        )
        made.append(new_event(order, source="/bench"))
    return made


class Tap:
    """A queue bound to every event: when each order was decided, and how many events
    of each type the run published."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.decided: dict[str, float] = {}
        self.outcomes: Counter[str] = Counter()
        self.types: Counter[str] = Counter()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        kind = message.routing_key or ""
        self.types[kind] += 1
        if kind in DONE:
            order_id = json.loads(message.body)["data"]["order_id"]
            self.decided.setdefault(order_id, time.perf_counter())
            self.outcomes[kind] += 1

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def publish(bus: Bus, events: Sequence[Event[Any]], sent: dict[str, float]) -> None:
    """As fast as the broker confirms, a window of them at a time."""
    for start in range(0, len(events), 200):
        window = events[start : start + 200]
        now = time.perf_counter()
        for event in window:
            sent[event.subject or event.id] = now
        await bus.publish_many(window)


async def timed_run(
    bus: Bus, tap: Tap, batch: Sequence[Event[Any]], timeout: float
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    started = time.perf_counter()
    await publish(bus, batch, sent)
    deadline = started + timeout
    with console.status("") as status:
        while len(tap.decided) < len(batch) and time.perf_counter() < deadline:
            status.update(f"{len(tap.decided)}/{len(batch)} orders decided")
            await asyncio.sleep(0.2)
    await _quiet(tap)
    decided = [tap.decided[o] for o in sent if o in tap.decided]
    latencies = sorted((tap.decided[o] - sent[o]) * 1000 for o in sent if o in tap.decided)
    elapsed = (max(decided) if decided else time.perf_counter()) - started
    return {
        "orders": len(batch),
        "decided": len(decided),
        "seconds": round(elapsed, 2),
        "orders_per_s": round(len(decided) / elapsed, 1) if decided else 0.0,
        "p50_ms": round(_quantile(latencies, 0.50), 1) if latencies else None,
        "p99_ms": round(_quantile(latencies, 0.99), 1) if latencies else None,
        "outcomes": dict(tap.outcomes),
        "events_per_order": round(
            sum(n for kind, n in tap.types.items() if kind in _FLOW) / len(batch), 2
        ),
    }


async def _quiet(tap: Tap, seconds: float = 30) -> None:
    """Until the tap has seen nothing new for a second: the hops after the decision
    (shipment.prepared) are counted in the events per order too."""
    deadline = time.perf_counter() + seconds
    last = -1
    while time.perf_counter() < deadline:
        total = sum(tap.types.values())
        if total == last:
            return
        last = total
        await asyncio.sleep(1.0)


_FLOW = {"order.created", *(t for answers in ANSWERS.values() for t in answers.values())}


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def connected(url: str, exchange: str) -> AsyncIterator[Bus]:
    transport = RabbitTransport(url, exchange=exchange, connection_name="shop-bench")
    await transport.start()
    try:
        yield Bus(transport, EventCodec(CATALOG))
    finally:
        await transport.close()


async def shop_run(args: argparse.Namespace, backend: str, scratch: Path) -> dict[str, Any]:
    exchange = f"agentbus.bench.{uuid.uuid4().hex[:10]}"
    database_name = f"agentbus_bench_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTBUS_", "OTEL_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        AMQP_URL=args.amqp_url,
        AGENTBUS_EXCHANGE=exchange,
        AGENTBUS_DATA=str(scratch / backend),
        AGENTBUS_SHIPPING_DELAY_S="0",
        AGENTBUS_MODEL="policy",
    )
    if backend == "postgres":
        env["DATABASE_URL"] = await create_database(args.database_url, database_name)
    processes = [ServiceProcess(name, env) for name in SERVICES]
    tap = Tap(args.amqp_url, exchange)
    try:
        await clean_broker(args.amqp_url, exchange)
        with console.status(f"starting the shop on {backend}"):
            await asyncio.gather(*(p.start() for p in processes))
        await tap.start()
        async with connected(args.amqp_url, exchange) as bus:
            await _stock_the_shop(bus, tap)
            tap.types.clear()
            profiling = await _profile(processes, args.profile, backend)
            try:
                return await timed_run(bus, tap, orders(args.orders, args.seed), args.timeout)
            finally:
                for profiler in profiling:
                    with contextlib.suppress(ProcessLookupError):
                        profiler.send_signal(signal.SIGINT)  # py-spy writes what it has
                    await profiler.wait()
    finally:
        await tap.close()
        codes = await asyncio.gather(*(p.stop() for p in processes))
        for process, code in zip(processes, codes, strict=True):
            if code not in (0, None):
                console.print(f"{process.label} exited {code}:\n{process.stderr()}")
        with contextlib.suppress(Exception):
            await clean_broker(args.amqp_url, exchange)
        if backend == "postgres":
            await drop_database(args.database_url, database_name)


async def _stock_the_shop(bus: Bus, tap: Tap) -> None:
    """Catalog and stock in, then one order through (inventory reads its queue in order,
    so it sees the stock first): every service is warm before the clock starts."""
    await bus.publish_many(catalog())
    warm = orders(1, seed=-1)[0]
    await bus.publish_many([warm])
    deadline = time.perf_counter() + 300
    with console.status("stocking the shop"):
        while warm.subject not in tap.decided:
            if time.perf_counter() > deadline:
                raise RuntimeError("the shop decided no order in 300 s")
            await asyncio.sleep(0.2)
    tap.decided.clear()
    tap.outcomes.clear()


async def _profile(
    processes: Sequence[ServiceProcess], folder: Path | None, backend: str
) -> list[asyncio.subprocess.Process]:
    """py-spy on every service while the orders flow: where the time goes."""
    if folder is None:
        return []
    os.makedirs(folder, exist_ok=True)
    spy = [found] if (found := shutil.which("py-spy")) else ["uvx", "py-spy"]
    started = []
    for service in processes:
        assert service.process is not None
        out = folder / f"{backend}-{service.label}.txt"
        started.append(
            await asyncio.create_subprocess_exec(
                *spy,
                "record",
                "--pid",
                str(service.process.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    await asyncio.sleep(2)  # attached before the clock starts
    return started


# -- the ceiling: plain aio-pika processes, the same hops, no work ---------------------


async def hop(url: str, exchange_name: str, service: str) -> None:
    """One plain process: the service's queue, answered with the next hop's event."""
    answers = ANSWERS[service]
    built = app.services[service]()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            f"{exchange_name}.{service}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        for kind in built.subscribes:
            await queue.bind(exchange, kind)

        waiting: list[aio_pika.abc.AbstractIncomingMessage] = []
        arrived = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            waiting.append(message)
            arrived.set()

        async def answer_in_batches() -> None:
            # What a plain consumer does well: the answers of everything delivered so far
            # published together, then one ack (multiple) for the lot once all are confirmed.
            while True:
                await arrived.wait()
                arrived.clear()
                batch = waiting[:]
                del waiting[:]
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                message.body,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                content_type=message.content_type,
                                message_id=uuid.uuid4().hex,
                                type=answers[message.routing_key or ""],
                            ),
                            routing_key=answers[message.routing_key or ""],
                        )
                        for message in batch
                        if (message.routing_key or "") in answers
                    )
                )
                await batch[-1].ack(multiple=True)

        answering = asyncio.create_task(answer_in_batches())
        await queue.consume(on_message)
        print("running", file=sys.stderr, flush=True)
        await answering


async def ceiling_run(args: argparse.Namespace) -> dict[str, Any]:
    exchange = f"agentbus.ceiling.{uuid.uuid4().hex[:10]}"
    processes: list[asyncio.subprocess.Process] = []
    tap = Tap(args.amqp_url, exchange)
    try:
        for service in SERVICES:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--hop",
                service,
                "--exchange",
                exchange,
                "--amqp-url",
                args.amqp_url,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            processes.append(process)
            assert process.stderr is not None
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            if not line.startswith(b"running"):
                raise RuntimeError(f"the {service} hop did not start: {line.decode()}")
        await tap.start()
        async with connected(args.amqp_url, exchange) as bus:
            return await timed_run(bus, tap, orders(args.orders, args.seed), args.timeout)
    finally:
        await tap.close()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
        await _delete(args.amqp_url, exchange)


async def _delete(url: str, exchange: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            await channel.queue_delete(f"{exchange}.{service}")
        await channel.exchange_delete(exchange)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "shop_throughput",
        "orders": args.orders,
        "services": list(SERVICES),
    }
    with tempfile.TemporaryDirectory(prefix="agentbus-shop-") as scratch:
        async with exclusive_queues():
            for backend in args.backends.split(","):
                ceiling = await ceiling_run(args)
                shop = await shop_run(args, backend, Path(scratch))
                report[backend] = {
                    "shop": shop,
                    "ceiling": ceiling,
                    "ratio": round(shop["orders_per_s"] / ceiling["orders_per_s"], 3)
                    if ceiling["orders_per_s"]
                    else None,
                }
    report["target"] = {"sqlite_ratio": 0.5}
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to create a scratch database on",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record py-spy profiles (raw, one file per service) of the timed part here",
    )
    parser.add_argument("--hop", choices=SERVICES, help=argparse.SUPPRESS)
    parser.add_argument("--exchange", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.hop:
        asyncio.run(hop(arguments.amqp_url, arguments.exchange, arguments.hop))
    else:
        print(json.dumps(asyncio.run(main(arguments)), indent=2))
