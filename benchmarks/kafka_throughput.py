"""The Kafka transport against a plain aiokafka consumer, in one run.

Each round appends the same number of `stock.received` records to one topic on the
local Kafka broker, and three consumer groups read exactly those records, one after
the other:

- baseline: aiokafka, `getmany`, a manual commit every 1,000 records, no processing;
- baseline_json: the same, parsing each value with `json.loads` (for reference: the
  least any consumer of CloudEvents does);
- noop: the agentbus runtime with a handler that does nothing (strict decoding,
  per-subject lanes, offsets committed as deliveries settle);
- inventory: the inventory service as `agentbus run` runs it, on SQLite: inbox, state
  change, outbox and the group's offsets in one transaction per batch.

Every variant's time runs from joining its group to its last record committed.
Telemetry is off (the OpenTelemetry API's no-op providers): this measures the transport
and the runtime; `consumer_throughput.py` measures what telemetry costs.

Prints JSON: records/s per variant and round, medians, and the median of the
per-round ratios to the baseline.

    uv run python benchmarks/kafka_throughput.py --records 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from consumer_throughput import products  # the same catalog as on RabbitMQ
from opentelemetry import metrics, trace

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.host import tune_gc_once
from agentbus.metrics import use_meter_provider
from agentbus.service import Context, Service
from agentbus.store import OutboxRelay, StoreBinding, open_database
from agentbus.telemetry import use_tracer_provider
from agentbus.transport.kafka import KafkaTransport
from consumers import inventory
from events import CATALOG, StockReceived

TOPIC = "stock.received"
BASELINE_COMMIT_EVERY = 1000
# A variant that has not read its records by then is stuck, not slow.
GIVE_UP_AFTER = 600.0


async def fill(bus: Bus, count: int, skus: int) -> None:
    for start in range(0, count, 2000):
        await bus.publish_many(
            [
                new_event(
                    StockReceived(sku=f"B-{n % skus:05d}", quantity=1, purchase_order_id=None),
                    source="/bench",
                )
                for n in range(start, min(start + 2000, count))
            ]
        )


def stuck(started: float, what: str) -> None:
    if time.perf_counter() - started > GIVE_UP_AFTER:
        raise RuntimeError(f"nothing more read in {GIVE_UP_AFTER:.0f} s: {what}")


async def baseline(
    bootstrap: str, topic: str, group: str, count: int, *, parse: bool = False
) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    started = time.perf_counter()
    await consumer.start()
    try:
        seen = uncommitted = 0
        while seen < count:
            stuck(started, f"baseline read {seen} of {count} records")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                if parse:
                    for record in records:
                        json.loads(record.value or b"null")
                seen += len(records)
                uncommitted += len(records)
            if uncommitted >= BASELINE_COMMIT_EVERY or (seen >= count and uncommitted):
                await consumer.commit()
                uncommitted = 0
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    if seen != count:
        raise RuntimeError(f"baseline read {seen} records, expected {count}")
    return count / elapsed


class Runtime:
    """A service consuming through its own transport each round, so that the group's
    member leaves when the round ends and the next round's joins alone."""

    def __init__(self, name: str, service: Service, bootstrap: str, prefix: str) -> None:
        self.name = name
        self.service = service
        self.bootstrap = bootstrap
        self.prefix = prefix

    def transport(self) -> KafkaTransport:
        return KafkaTransport(
            self.bootstrap, prefix=self.prefix, event_types=CATALOG, client_id="bench"
        )

    async def run(self, count: int) -> float:
        transport = self.transport()
        await transport.start()
        try:
            consumer = Consumer(self.service, Bus(transport, EventCodec(CATALOG)))
            settled = consumer.stats.processed + consumer.stats.ignored
            started = time.perf_counter()
            await consumer.start()
            while consumer.stats.processed + consumer.stats.ignored < settled + count:
                stuck(started, f"{self.name}: {consumer.stats}")
                await asyncio.sleep(0.002)
            await consumer.stop()  # the last offsets committed
            elapsed = time.perf_counter() - started
            if consumer.stats.failed or consumer.stats.dead_lettered:
                raise RuntimeError(f"{self.name}: records failed: {consumer.stats}")
        finally:
            await transport.close()
        return count / elapsed


def noop_service(queue: str) -> Service:
    service = Service("bench-noop", queue=queue)

    @service.handles(TOPIC)
    async def handle(event: Event[Any], ctx: Context) -> None:
        return None

    return service


async def prepare_inventory(
    runtime: Runtime, bus: Bus, data: Path, skus: int
) -> tuple[StoreBinding, Any]:
    """The service's SQLite database, its catalog applied untimed."""
    store = runtime.service.positions  # the service's StoreBinding keeps its offsets
    assert isinstance(store, StoreBinding)
    database = open_database(f"bench_{uuid.uuid4().hex[:8]}", bus.codec, url=None, data_dir=data)
    await store.attach(database, OutboxRelay(database, bus))
    await bus.publish_many(products(skus))
    await runtime.run(skus)
    return store, database


async def remove(bootstrap: str, prefix: str, groups: Sequence[str]) -> None:
    from aiokafka.protocol.admin import DeleteGroupsRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
        for group in groups:
            # aiokafka's admin client has no call for it: sent as the protocol defines it.
            node = await admin.find_coordinator(group)
            await admin._send_request_to_node(node, DeleteGroupsRequest([group]))
    finally:
        await admin.close()


def ratio(values: list[float], base: list[float]) -> float:
    return round(statistics.median([v / b for v, b in zip(values, base, strict=True)]), 3)


async def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)

    use_tracer_provider(trace.NoOpTracerProvider())
    use_meter_provider(metrics.NoOpMeterProvider())
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    publisher = KafkaTransport(args.bootstrap, prefix=prefix, event_types=CATALOG)
    await publisher.start()
    bus = Bus(publisher, EventCodec(CATALOG))
    noop = Runtime("noop", noop_service("noop"), args.bootstrap, prefix)
    shop = inventory.build()
    shop.queue = "inventory"
    stocked = Runtime("inventory", shop, args.bootstrap, prefix)
    data = Path(tempfile.mkdtemp(prefix="agentbus-bench-"))
    results: dict[str, list[float]] = {
        "baseline": [],
        "baseline_json": [],
        "noop": [],
        "inventory": [],
    }
    database = None
    try:
        _, database = await prepare_inventory(stocked, bus, data, args.skus)
        # What `agentbus run` does once its services are up.
        tune_gc_once()
        for round_ in range(args.repeat):
            await fill(bus, args.records, args.skus)
            results["baseline"].append(
                await baseline(args.bootstrap, prefix + TOPIC, prefix + "baseline", args.records)
            )
            results["baseline_json"].append(
                await baseline(
                    args.bootstrap, prefix + TOPIC, prefix + "json", args.records, parse=True
                )
            )
            results["noop"].append(await noop.run(args.records))
            results["inventory"].append(await stocked.run(args.records))
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()),
                file=sys.stderr,
            )
    finally:
        if database is not None:
            await database.close()
        await publisher.close()
        await remove(
            args.bootstrap, prefix, [prefix + g for g in ("baseline", "json", "noop", "inventory")]
        )
        shutil.rmtree(data, ignore_errors=True)

    return {
        "benchmark": "kafka_throughput",
        "event": f"{TOPIC}, the same records read by each variant",
        "records": args.records,
        "repeat": args.repeat,
        "skus": args.skus,
        "records_per_s": {name: [round(x) for x in values] for name, values in results.items()},
        "median_records_per_s": {
            name: round(statistics.median(values)) for name, values in results.items()
        },
        "ratio_to_baseline": {
            name: ratio(results[name], results["baseline"])
            for name in ("baseline_json", "noop", "inventory")
        },
        "targets": {"noop": 1.0, "inventory": 0.8},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
