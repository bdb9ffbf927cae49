"""benchmarks/shop_throughput.py runs to the end over a few orders: every order is
decided in the shop and in the ceiling, and both move the same events per order
(the full run on both databases and its figures are in benchmarks/README.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.rabbitmq

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "shop_throughput.py"


async def test_the_shop_benchmark_decides_every_order_in_both_runs(amqp_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *("--orders", "60", "--backends", "sqlite", "--timeout", "120"),
        *("--amqp-url", amqp_url),
        env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    runs = report["sqlite"]
    for run in (runs["shop"], runs["ceiling"]):
        assert run["decided"] == 60, run
        assert run["outcomes"] == {"order.confirmed": 60}, run
        assert run["events_per_order"] == 5.0, run
        assert 0 < run["p50_ms"] <= run["p99_ms"], run
    assert runs["ratio"] == pytest.approx(
        runs["shop"]["orders_per_s"] / runs["ceiling"]["orders_per_s"], abs=0.01
    )
