"""benchmarks/kafka_throughput.py runs to the end over a few records and reports every
variant: the full run (20,000 records, three rounds) is in benchmarks/README.md."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "kafka_throughput.py"


async def test_the_kafka_benchmark_reports_every_variant(kafka_bootstrap: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *("--records", "300", "--repeat", "1", "--skus", "20"),
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["records"] == 300
    variants = {"baseline", "baseline_json", "noop", "inventory"}
    assert set(report["records_per_s"]) == variants
    assert all(rates[0] > 0 for rates in report["records_per_s"].values())
    assert set(report["ratio_to_baseline"]) == variants - {"baseline"}
    assert report["targets"] == {"noop": 1.0, "inventory": 0.8}
