"""The restock agent on PostgreSQL under SIGKILLs and database restarts, many runs in flight.

The agent runs as an `agentbus run` subprocess over RabbitMQ with its store and its
LangGraph checkpoints on PostgreSQL (the offline policy decides, so runs are short and
many are in flight at any moment). A product and an `inventory.low` trigger are
published for each of `--triggers` SKUs, the triggers at a steady pace, while the
agent is SIGKILLed and restarted at random moments and, a quarter of the time instead,
PostgreSQL is restarted. Then it waits until every trigger's run has finished.

Prints JSON: triggers, faults, runs by status, suggestions, triggers without exactly
one run, and how many checkpoints the runtime discarded to run afresh (from the
agent's log). A kill between a step's writes and the checkpoint after it (LangGraph
saves that in the background) must resume after the step, never discard.

    uv run python benchmarks/agent_kills.py --triggers 3000 --seconds 150
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the driver lives in tests/

from tests.integration.chaos import Shop, _restart_postgres, publish_surely
from tests.integration.chaos_processes import ServiceProcess
from tests.support.broker import low, product

AGENT = "restock-agent"
SCHEMA = "restock_agent"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--triggers", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=150.0, help="how long faults go on")
    parser.add_argument(
        "--restart-share", type=float, default=0.25, help="faults that restart PostgreSQL"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="the server: the run makes a database of its own there and drops it after",
    )
    return parser.parse_args(argv)


async def runs_by_status(url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(url) as connection:
        cursor = await connection.execute(
            f"SELECT status, count(*) FROM {SCHEMA}.agent_runs GROUP BY status"
        )
        return {str(status): int(n) for status, n in await cursor.fetchall()}


async def tally(url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(url) as connection:
        suggestions = await connection.execute(f"SELECT count(*) FROM {SCHEMA}.agent_suggestions")
        [made] = await suggestions.fetchone() or (0,)
        runs = await connection.execute(
            f"SELECT count(*) FROM {SCHEMA}.agent_runs WHERE status = 'completed'"
            " AND suggestion_id IS NOT NULL"
        )
        [suggested] = await runs.fetchone() or (0,)
    return {"suggestions": int(made), "completed_runs_with_a_suggestion": int(suggested)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="agentbus-agent-kills-"))
    shop = Shop(args.amqp_url, scratch / "data", args.database_url)
    await shop.prepare()
    assert shop.database_url is not None
    log = scratch / f"{AGENT}.log"
    agent = ServiceProcess(AGENT, shop.env(AGENT), log=log)
    shop.processes.append(agent)
    kills = restarts = 0
    began = time.monotonic()
    try:
        await agent.start()
        skus = [f"SKU-{args.seed}-{uuid.uuid4().hex[:6]}-{n}" for n in range(args.triggers)]
        triggers = [low(sku) for sku in skus]
        async with shop.publisher() as bus:
            for start in range(0, len(skus), 200):
                await publish_surely(bus, [product(sku) for sku in skus[start : start + 200]])

            async def steadily() -> None:
                pause = args.seconds / max(1, len(triggers) // 50)
                for start in range(0, len(triggers), 50):
                    await publish_surely(bus, triggers[start : start + 50])
                    await asyncio.sleep(pause)

            publishing = asyncio.create_task(steadily())
            faults_until = time.monotonic() + args.seconds
            while time.monotonic() < faults_until:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                if rng.random() < args.restart_share:
                    await _restart_postgres()
                    restarts += 1
                else:
                    await agent.kill()
                    kills += 1
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    await agent.start_surely()
            await publishing
        deadline = time.monotonic() + 600
        while True:
            statuses = await runs_by_status(shop.database_url)
            finished = sum(n for status, n in statuses.items() if status != "started")
            if finished >= len(triggers) or time.monotonic() > deadline:
                break
            await asyncio.sleep(2.0)
        counted = await tally(shop.database_url)
    finally:
        await shop.dispose()
    lines = log.read_text().splitlines() if log.exists() else []
    unfinished = statuses.get("started", 0) + max(0, len(triggers) - sum(statuses.values()))
    return {
        "triggers": len(triggers),
        "sigkills": kills,
        "database_restarts": restarts,
        "runs": statuses,
        "unfinished_runs": unfinished,
        **counted,
        "checkpoints_discarded": sum(
            "checkpoint of" in line and "discarded" in line for line in lines
        ),
        "dead_letters_logged": sum("dead-lettering" in line for line in lines),
        "seconds": round(time.monotonic() - began, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse())), indent=2))
