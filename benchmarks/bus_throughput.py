"""Consumer throughput: the agentbus runtime against a plain aio-pika consumer.

Both consume the same N persistent CloudEvents from a queue of the same type on
the local RabbitMQ, in the same run, alternating, several rounds:

- baseline: aio-pika, prefetch 256, one `ack()` per message, no processing;
- runtime: `agentbus.consumer.Consumer` with a no-op handler (strict decoding,
  per-subject lanes, process spans, coalesced acks), prefetch 256.

Prints JSON with msg/s for each, per round, and the median ratio runtime/baseline.

    uv run python benchmarks/bus_throughput.py --messages 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any, ClassVar

import aio_pika
from pydantic import BaseModel

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.envelope import EventCodec, new_event
from agentbus.service import Context, Service
from agentbus.settings import ConsumerSettings
from agentbus.transport.base import QueueSpec, describe
from agentbus.transport.rabbitmq import RabbitTransport


class Tick(BaseModel):
    event_type: ClassVar[str] = "bench.tick"
    subject_field: ClassVar[str] = "key"
    key: str
    n: int


CATALOG: dict[str, type[BaseModel]] = {"bench.tick": Tick}


async def fill(bus: Bus, queue: str, count: int, keys: int) -> None:
    """Publish `count` events straight into `queue`, confirmed, in pipelined windows."""
    for start in range(0, count, 1000):
        messages = []
        for n in range(start, min(start + 1000, count)):
            event = new_event(Tick(key=f"k{n % keys}", n=n), source="/bench")
            message = bus.to_message(event)
            messages.append(message)
        await asyncio.gather(*(bus.transport.send_to_queue(queue, m) for m in messages))


async def run_baseline(url: str, queue: str, count: int, prefetch: int) -> float:
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


async def run_runtime(bus: Bus, queue: str, count: int, prefetch: int) -> float:
    service = Service("bench", queue=queue)
    done = asyncio.Event()
    seen = 0

    @service.handles("bench.tick")
    async def handle(event: Any, ctx: Context) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    consumer = Consumer(service, bus, ConsumerSettings(prefetch=prefetch))
    started = time.perf_counter()
    await consumer.start()
    await done.wait()
    await consumer.stop()  # includes the final ack flush
    elapsed = time.perf_counter() - started
    return count / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--keys", type=int, default=1000, help="distinct subjects")
    parser.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    parser.add_argument(
        "--url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    transport = RabbitTransport(args.url, exchange=f"bench.{run}", connection_name="bench")
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    base_queue = f"bench.{run}.baseline"
    runtime_queue = f"bench.{run}.runtime"
    settings = ConsumerSettings(prefetch=args.prefetch, queue_kind=args.queue_type)
    probe = Consumer(Service("bench", queue=runtime_queue), bus, settings)
    specs = [
        *probe.topology(),
        QueueSpec(base_queue, kind=args.queue_type),
    ]
    await transport.declare(specs)
    baseline: list[float] = []
    runtime: list[float] = []
    try:
        for round_ in range(args.rounds):
            # Which goes first alternates: a variant run second reads differently from the
            # same one run first (measured in consumer_throughput), and neither should
            # always have the advantage.
            for turn in (0, 1) if round_ % 2 == 0 else (1, 0):
                if turn == 0:
                    await fill(bus, base_queue, args.messages, args.keys)
                    baseline.append(
                        await run_baseline(args.url, base_queue, args.messages, args.prefetch)
                    )
                else:
                    await fill(bus, runtime_queue, args.messages, args.keys)
                    runtime.append(
                        await run_runtime(bus, runtime_queue, args.messages, args.prefetch)
                    )
            print(
                f"round {round_ + 1}: baseline {baseline[-1]:.0f} msg/s, "
                f"runtime {runtime[-1]:.0f} msg/s",
                file=sys.stderr,
            )
    finally:
        for spec in specs:
            await transport.delete_queue(spec.name)
        await transport.close()
    ratios = [r / b for r, b in zip(runtime, baseline, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "bus_throughput",
                "messages": args.messages,
                "rounds": args.rounds,
                "prefetch": args.prefetch,
                "queue_type": args.queue_type,
                "queue_arguments": describe(QueueSpec("q", kind=args.queue_type)),
                "baseline_msg_per_s": [round(x) for x in baseline],
                "runtime_msg_per_s": [round(x) for x in runtime],
                "baseline_median": round(statistics.median(baseline)),
                "runtime_median": round(statistics.median(runtime)),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratios": [round(x, 3) for x in ratios],
                "target_ratio": 1.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
