"""Retrieval latency of the embedded vector store at 10k and 100k episodes.

384-dimension unit vectors with payloads (`sku` from 500 values, `kind` from 5);
p50 and p95 of single searches (top 5), unfiltered and filtered by `kind`, after
a warm-up. qdrant-client's local mode at 10k is measured in the same run as the
reference the embedded engine replaced.

    uv run python benchmarks/memory_retrieval.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient

from agentbus.memory import Point, point_id
from agentbus.memory.edge import EdgeStore
from agentbus.memory.server import QdrantServerStore

DIM = 384
KINDS = ["low", "suggestion", "decision", "arrival", "stockout"]


def vector(rng: random.Random) -> list[float]:
    values = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


def points(rng: random.Random, start: int, count: int) -> list[Point]:
    return [
        Point(
            point_id("bench", str(n)),
            vector(rng),
            {"sku": f"SKU-{rng.randrange(500):03d}", "kind": rng.choice(KINDS), "n": n},
        )
        for n in range(start, start + count)
    ]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


async def measure(
    store: Any, queries: list[list[float]], where: dict[str, str] | None
) -> dict[str, float]:
    for query in queries[:20]:
        await store.search("bench", query, limit=5, where=where)
    samples = []
    for query in queries:
        started = time.perf_counter()
        await store.search("bench", query, limit=5, where=where)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    rng = random.Random(7)
    queries = [vector(rng) for _ in range(args.queries)]
    results: dict[str, Any] = {"benchmark": "memory_retrieval", "dim": DIM, "queries": args.queries}
    store = EdgeStore(Path(tempfile.mkdtemp(prefix="agentbus-vectors-")))
    await store.ensure_collection("bench", DIM, indexed=("sku", "kind"))
    loaded = 0
    for size in sorted(args.sizes):
        while loaded < size:
            batch = min(2000, size - loaded)
            await store.upsert("bench", points(rng, loaded, batch))
            loaded += batch
        print(f"embedded engine: {loaded} points loaded", file=sys.stderr)
        results[f"embedded_{size}"] = {
            "unfiltered": await measure(store, queries, None),
            "filtered_by_kind": await measure(store, queries, {"kind": "decision"}),
        }
    await store.close()

    local = QdrantServerStore(client=AsyncQdrantClient(location=":memory:"))
    await local.ensure_collection("bench", DIM)
    rng = random.Random(7)
    for start in range(0, 10_000, 2000):
        await local.upsert("bench", points(rng, start, 2000))
    results["qdrant_client_local_10000"] = {
        "unfiltered": await measure(local, queries[:50], None),
        "filtered_by_kind": await measure(local, queries[:50], {"kind": "decision"}),
    }
    await local.close()
    results["target"] = {"embedded_100000_p50_ms_max": 5.0}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
