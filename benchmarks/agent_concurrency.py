"""Agent runs per second at the default concurrency against one run at a time.

The restock agent runs as a consumer on the in-process broker with SQLite, its
model answering after 200 ms (a stand-in for a real LLM's latency: the point is
how many runs the runtime keeps in flight, not the model). One configuration
runs with the agent's default lanes and prefetch, the other with one lane and
prefetch 1. Per-subject order is checked: with two triggers per SKU, the
suggestion must come from each SKU's first trigger (the second coalesces into it).
Each configuration first runs a short warm-up of its own (imports, statement
caches, the first checkpoints), which is not counted.

    uv run python benchmarks/agent_concurrency.py
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentbus.agent import AgentRuntimeOptions
from agentbus.agent.runtime import AgentRunner
from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.host import Host, tune_gc_once
from agentbus.llm import ModelRequest, ModelResponse, Usage
from agentbus.settings import Settings
from agentbus.transport.base import Delivery, QueueSpec
from agentbus.transport.memory import InMemoryBroker
from agents.restock import declaration
from agents.restock.proposal import RestockProposal
from events import CATALOG, InventoryLow

START = datetime(2026, 11, 2, tzinfo=UTC)


class SlowModel:
    name = "slow"
    provider = "bench"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        await asyncio.sleep(self.latency)
        output = RestockProposal(
            quantity=10, urgency="medium", rationale="bench", confidence=0.5, evidence=[]
        )
        return ModelResponse(output, self.name, self.provider, Usage(100, 20), "stop")


def triggers(skus: int, per_sku: int) -> list[Event[Any]]:
    events = []
    for round_ in range(per_sku):
        for n in range(skus):
            events.append(
                new_event(
                    InventoryLow(
                        sku=f"B-{n:04d}",
                        available=3,
                        on_hand=3,
                        reserved=0,
                        reorder_point=10,
                        max_stock=40,
                        lead_time_days=3,
                    ),
                    source="/bench",
                    id=f"low-{n}-{round_}",
                    time=START + timedelta(minutes=round_),
                )
            )
    return events


async def run(skus: int, latency: float, one_at_a_time: bool) -> dict[str, Any]:
    model = SlowModel(latency)
    agent = declaration()
    agent.token_budget_per_hour = None
    if one_at_a_time:
        agent.concurrency = 1
    runner = AgentRunner(agent, AgentRuntimeOptions(model=lambda: model))
    if one_at_a_time:
        runner.service.prefetch = 1
    base = Settings.from_env({})
    settings = dataclasses.replace(
        base, data_dir=Path(tempfile.mkdtemp(prefix="agentbus-bench-")), database_url=None
    )
    transport = InMemoryBroker().connect()
    await transport.start()
    bus = Bus(transport, EventCodec(CATALOG))
    made: dict[str, str] = {}
    await transport.declare([QueueSpec("bench.observer", bindings=("restock.recommended",))])

    async def observe(delivery: Delivery) -> None:
        event = bus.codec.decode(delivery.message.body)
        made[event.data.sku] = event.data.trigger_event_id
        await delivery.ack()

    await transport.consume("bench.observer", observe, prefetch=1000)
    host = Host(bus, [runner.service], settings)
    await host.start()
    tune_gc_once()  # what `agentbus run` does once its services are up
    events = triggers(skus, 2)
    started = time.perf_counter()
    await bus.publish_many(events)
    while len(made) < skus:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await host.settle(timeout=120)
    await host.stop()
    await transport.close()
    in_order = all(made[f"B-{n:04d}"] == f"low-{n}-0" for n in range(skus))
    return {
        "runs": runner.runs_started,
        "model_calls": model.calls,
        "seconds": round(elapsed, 3),
        "runs_per_second": round(runner.runs_started / elapsed, 2),
        "per_subject_order_kept": in_order,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skus", type=int, default=256)
    parser.add_argument("--serial-skus", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--warmup-skus", type=int, default=32)
    args = parser.parse_args()
    await run(args.warmup_skus, args.latency, one_at_a_time=False)
    concurrent = await run(args.skus, args.latency, one_at_a_time=False)
    print(f"default concurrency: {concurrent}", file=sys.stderr)
    await run(2, args.latency, one_at_a_time=True)
    serial = await run(args.serial_skus, args.latency, one_at_a_time=True)
    print(f"one at a time: {serial}", file=sys.stderr)
    ratio = concurrent["runs_per_second"] / serial["runs_per_second"]
    print(
        json.dumps(
            {
                "benchmark": "agent_concurrency",
                "model_latency_s": args.latency,
                "default": concurrent,
                "one_at_a_time": serial,
                "ratio": round(ratio, 2),
                "target_ratio": 20,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
