"""Events per second of in-process replay against the same replay through RabbitMQ.

One recording from `evals/fixtures`, replayed by the eval suite's driver through
all the shop's consumers and the restock agent: once on the in-process broker,
once over the local RabbitMQ (quorum queues, publisher confirms), with the same
batching (a day at a time, settled before the next). Rounds alternate so that
both see the same machine; each path first replays a tenth of the recording's
inputs as a warm-up of its own (imports, statement caches), not counted.

    uv run python benchmarks/eval_replay.py --recording evals/fixtures/steady.jsonl
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
from pathlib import Path
from typing import Any

import aio_pika

from agentbus.envelope import EventCodec
from agentbus.host import tune_gc_once
from agentbus.recording import read_recording
from agentbus.transport.rabbitmq import RabbitTransport
from agents.registry import restock_agent
from evals.replay import OBSERVER, SERVICES, inputs_of, replay
from events import CATALOG
from tools import forecasting

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the lock lives in tests/
from tests.integration.chaos import exclusive_queues, queue_names

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def clean(exchange: str) -> None:
    """Delete the services' queues (main, retry, dead letter) and the exchange."""
    ours = (*SERVICES, OBSERVER)
    names = [
        name
        for name in await queue_names()
        if any(name == own or name.startswith(f"{own}.") for own in ours)
    ]
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)


async def one(events: list[Any], broker: bool) -> float:
    transport = None
    exchange = f"agentbus.bench.{uuid.uuid4().hex[:8]}"
    if broker:
        await clean(exchange)
        transport = RabbitTransport(AMQP_URL, exchange=exchange, connection_name="bench")
    started = time.perf_counter()
    try:
        await replay(events, restock_agent, transport=transport)
    finally:
        elapsed = time.perf_counter() - started
        if broker:
            await clean(exchange)
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recording", type=Path, default=Path("evals/fixtures/steady.jsonl"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args()
    events = [r.event for r in read_recording(args.recording, EventCodec(CATALOG))]
    inputs = len(inputs_of(events))
    warmup = events[: len(events) // 10]
    tune_gc_once()  # as `agentbus eval` does before it replays
    rounds: dict[str, list[float]] = {"in_process": [], "rabbitmq": []}
    # The services' queue names are fixed: hold the lock the broker tests take on them.
    async with exclusive_queues():
        if not args.no_warmup:
            # The warm-up's tenth of a recording forecasts nothing: without this the
            # forecasting library's import (seconds) would fall in the first round.
            forecasting.engine()
            for name in ("in_process", "rabbitmq"):
                await one(warmup, broker=name == "rabbitmq")
        for n in range(args.rounds):
            for name in ("in_process", "rabbitmq"):
                seconds = await one(events, broker=name == "rabbitmq")
                rounds[name].append(inputs / seconds)
                print(f"round {n + 1} {name}: {inputs / seconds:,.0f} events/s", file=sys.stderr)
    result = {
        "recording": str(args.recording),
        "input_events": inputs,
        "events_per_second": {k: [round(v) for v in vs] for k, vs in rounds.items()},
        "ratio": round(
            statistics.median(rounds["in_process"]) / statistics.median(rounds["rabbitmq"]), 2
        ),
        "target": 10,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
