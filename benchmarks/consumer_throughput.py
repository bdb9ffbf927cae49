"""Inventory service throughput against a plain aio-pika consumer, in one run.

Every variant consumes the same number of persistent `stock.received` events
from a queue of the same type on the local RabbitMQ, alternating, over rounds (each
round starts one variant further along, so every variant runs in every position):

- baseline: aio-pika, prefetch 256, one ack per message, no processing;
- sqlite / sqlite-untraced / postgres: the inventory service as `agentbus run`
  runs it (strict decoding, inbox, state change in one transaction per batch,
  outbox, coalesced acks), with the OpenTelemetry SDK recording every span (sent
  to an exporter that drops them) and every metric (read by an in-memory
  reader), or with both off.

Prints JSON: msg/s per variant and round, the median ratios to the baseline, and
the cost of telemetry (1 - traced/untraced throughput, the median of rounds).

    uv run python benchmarks/consumer_throughput.py --messages 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import EventCodec, new_event
from agentbus.host import tune_gc_once
from agentbus.metrics import use_meter_provider
from agentbus.settings import ConsumerSettings
from agentbus.store import OutboxRelay, StoreBinding, open_database
from agentbus.telemetry import use_tracer_provider
from agentbus.transport.base import QueueSpec
from agentbus.transport.rabbitmq import RabbitTransport
from consumers import inventory
from events import CATALOG, ProductUpserted, StockReceived


class DropSpans(SpanExporter):
    """Spans are built, batched and handed over, then dropped: the cost without the I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def products(skus: int) -> list[Any]:
    return [
        new_event(
            ProductUpserted(
                sku=f"B-{n:05d}",
                name=f"Bench {n}",
                description="",
                category="bench",
                unit_cost=1,
                unit_price=2,
                lead_time_days=3,
                reorder_point=5,
                max_stock=100,
                supplier="bench",
            ),
            source="/bench",
        )
        for n in range(skus)
    ]


async def fill(bus: Bus, queue: str, count: int, skus: int) -> None:
    for start in range(0, count, 1000):
        messages = [
            bus.to_message(
                new_event(
                    StockReceived(sku=f"B-{n % skus:05d}", quantity=1, purchase_order_id=None),
                    source="/bench",
                )
            )
            for n in range(start, min(start + 1000, count))
        ]
        await asyncio.gather(*(bus.transport.send_to_queue(queue, m) for m in messages))


async def baseline(url: str, queue: str, count: int, prefetch: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        amqp_queue = await channel.get_queue(queue)
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen == count:
                done.set()

        started = time.perf_counter()
        tag = await amqp_queue.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
        await amqp_queue.cancel(tag)
    return count / elapsed


class Variant:
    def __init__(
        self,
        name: str,
        bus: Bus,
        queue: str,
        database_url: str | None,
        data: Path,
        traced: bool,
        prefetch: int,
    ) -> None:
        self.name = name
        self.bus = bus
        self.queue = queue
        self.database_url = database_url
        self.data = data
        self.traced = traced
        self.prefetch = prefetch
        self.service = inventory.build()
        self.service.queue = queue
        self.consumer = Consumer(self.service, bus, ConsumerSettings(prefetch=prefetch))
        self.store = next(h.__self__ for h in self.service.startup)  # the StoreBinding

    async def prepare(self, skus: int) -> None:
        database = open_database(
            f"bench_{uuid.uuid4().hex[:8]}",
            self.bus.codec,
            url=self.database_url,
            data_dir=self.data,
        )
        assert isinstance(self.store, StoreBinding)
        await self.store.attach(database, OutboxRelay(database, self.bus))
        await self.bus.transport.declare(self.consumer.topology())
        # Load the catalog through the service itself, untimed.
        await asyncio.gather(
            *(
                self.bus.transport.send_to_queue(self.queue, self.bus.to_message(e))
                for e in products(skus)
            )
        )
        await self.run(skus)

    async def run(self, count: int) -> float:
        consumer = Consumer(self.service, self.bus, ConsumerSettings(prefetch=self.prefetch))
        target = consumer.stats.processed + count
        started = time.perf_counter()
        await consumer.start()
        while consumer.stats.processed < target:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.002)
        await consumer.stop()
        return count / (time.perf_counter() - started)

    async def close(self) -> None:
        database = self.store.database
        schema = database.schema
        if schema is not None:

            def drop(connection: Any) -> None:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                connection.commit()

            await database.read(drop)
        await database.close()


async def postgres_answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--variants",
        default="sqlite,sqlite_untraced,postgres",
        help="which to run beside the baseline (comma-separated), e.g. postgres to profile it",
    )
    args = parser.parse_args()
    wanted = set(args.variants.split(","))

    traced_provider = TracerProvider()
    traced_provider.add_span_processor(BatchSpanProcessor(DropSpans(), max_queue_size=65536))
    untraced = trace.NoOpTracerProvider()
    metered = MeterProvider(metric_readers=[InMemoryMetricReader()])
    unmetered = metrics.NoOpMeterProvider()

    def observe(on: bool) -> None:
        use_tracer_provider(traced_provider if on else untraced)
        use_meter_provider(metered if on else unmetered)

    run = uuid.uuid4().hex[:8]
    transport = RabbitTransport(args.amqp_url, exchange=f"bench.{run}", connection_name="bench")
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    base_queue = f"bench.{run}.baseline"
    await transport.declare([QueueSpec(base_queue)])
    data = Path(tempfile.mkdtemp(prefix="agentbus-bench-"))
    variants = [
        Variant("sqlite", bus, f"bench.{run}.sqlite", None, data, True, args.prefetch),
        Variant("sqlite_untraced", bus, f"bench.{run}.sqlite2", None, data, False, args.prefetch),
    ]
    variants = [variant for variant in variants if variant.name in wanted]
    if "postgres" in wanted and await postgres_answers(args.database_url):
        variants.append(
            Variant(
                "postgres", bus, f"bench.{run}.pg", args.database_url, data, True, args.prefetch
            )
        )
    results: dict[str, list[float]] = {"baseline": []} | {v.name: [] for v in variants}
    try:
        for variant in variants:
            observe(variant.traced)
            await variant.prepare(args.skus)
        # What `agentbus run` does once its services are up: without it, full
        # collections walk the whole heap of imports (measured: a tenth of the run)
        # and young ones run every few dozen messages.
        tune_gc_once()
        # Every round starts one place further along the list, so that each variant runs
        # in each position as often as the others: measured with a fixed order, the one
        # running right after the plain consumer read faster than the same one a place
        # later (telemetry cost 0.16 with the traced variant second, 0.20 with it third).
        contenders: list[tuple[str, Variant | None]] = [("baseline", None)] + [
            (variant.name, variant) for variant in variants
        ]
        for round_ in range(args.rounds):
            shift = round_ % len(contenders)
            for name, runner in contenders[shift:] + contenders[:shift]:
                if runner is None:
                    await fill(bus, base_queue, args.messages, args.skus)
                    measured = await baseline(
                        args.amqp_url, base_queue, args.messages, args.prefetch
                    )
                else:
                    await fill(bus, runner.queue, args.messages, args.skus)
                    observe(runner.traced)
                    measured = await runner.run(args.messages)
                results[name].append(measured)
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()),
                file=sys.stderr,
            )
    finally:
        for variant in variants:
            for spec in variant.consumer.topology():
                await transport.delete_queue(spec.name)
            await variant.close()
        await transport.delete_queue(base_queue)
        await transport.close()
        traced_provider.shutdown()
        metered.shutdown()

    ratios = {
        name: round(
            statistics.median([v / b for v, b in zip(values, results["baseline"], strict=True)]), 3
        )
        for name, values in results.items()
        if name != "baseline"
    }
    tracing_cost = None
    if "sqlite" in results and "sqlite_untraced" in results:
        pairs = zip(results["sqlite"], results["sqlite_untraced"], strict=True)
        tracing_cost = round(1 - statistics.median([t / u for t, u in pairs]), 3)
    print(
        json.dumps(
            {
                "benchmark": "consumer_throughput",
                "event": "stock.received through the inventory service",
                "messages": args.messages,
                "rounds": args.rounds,
                "prefetch": args.prefetch,
                "skus": args.skus,
                "msg_per_s": {name: [round(x) for x in values] for name, values in results.items()},
                "median_msg_per_s": {
                    name: round(statistics.median(values)) for name, values in results.items()
                },
                "ratio_to_baseline": ratios,
                "tracing_cost": tracing_cost,
                "targets": {"sqlite_ratio": 0.8, "tracing_cost_max": 0.15},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
