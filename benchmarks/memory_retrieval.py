"""Retrieval latency of the embedded vector store at 10k and 100k points.

384-dimension random unit vectors with payloads (`sku` from 500 values, `kind`
from 5); p50 and p95 of single top-5 searches through the async API, unfiltered
and filtered by `kind`, after a warm-up. Also: recall@5 against exact search,
load and indexing time, and the longest stall of the event loop while loading
and indexing (indexing runs in a child process, so it should stay small).
qdrant-client's local mode at 10k is measured in the same run as a baseline.

    uv run python benchmarks/memory_retrieval.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient

from agentbus.memory import Point, VectorStore, point_id
from agentbus.memory.edge import EdgeStore
from agentbus.memory.server import QdrantServerStore

DIM = 384
KINDS = ["low", "suggestion", "decision", "arrival", "stockout"]
SKUS = 500
BATCH = 1000
TOP = 5


class Data:
    """All vectors up front (numpy: 100k vectors in Python's random would take half a minute)."""

    def __init__(
        self,
        vectors: np.ndarray[Any, Any],
        queries: np.ndarray[Any, Any],
        kinds: np.ndarray[Any, Any],
        skus: np.ndarray[Any, Any],
    ) -> None:
        self.vectors = self._unit(vectors)
        self.queries = self._unit(queries)
        self.kinds = kinds
        self.skus = skus

    @classmethod
    def generated(cls, size: int, queries: int, *, clustered: bool, seed: int = 7) -> Data:
        rng = np.random.default_rng(seed)
        kinds = rng.integers(0, len(KINDS), size)
        skus = rng.integers(0, SKUS, size)
        noise = rng.standard_normal((size, DIM), dtype=np.float32)
        query_noise = rng.standard_normal((queries, DIM), dtype=np.float32)
        if clustered:
            # Like embedded text: episodes of one SKU lie around a point of their own.
            # Random vectors are the worst case of an HNSW graph; text is not random.
            centres = rng.standard_normal((SKUS, DIM), dtype=np.float32)
            noise += centres[skus]
            query_noise += centres[rng.integers(0, SKUS, queries)]
        return cls(noise, query_noise, kinds, skus)

    @classmethod
    def e5(cls, size: int, queries: int, *, seed: int = 7) -> Data:
        """Episode texts as the memory service writes them, embedded by multilingual-e5-small
        (the `e5` extra). Thousands of near-identical sentences that differ in a SKU and a few
        numbers: the hard case for an index. Embedding 100k texts takes about half an hour
        here, so the vectors are kept in a cache folder and reused by later runs."""
        cache = Path(
            os.environ.get("AGENTBUS_BENCH_CACHE", Path.home() / ".cache/agentbus/benchmarks")
        )
        cache.mkdir(parents=True, exist_ok=True)
        texts, kinds, skus = episode_texts(size, seed)
        asked = [query_text(n, seed) for n in range(queries)]
        return cls(
            embedded_texts(cache / f"e5-episodes-{seed}", texts, query=False),
            embedded_texts(cache / f"e5-queries-{seed}", asked, query=True),
            kinds,
            skus,
        )

    @staticmethod
    def _unit(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return result

    def points(self, start: int, stop: int) -> list[Point]:
        return [
            Point(
                point_id("bench", str(n)),
                self.vectors[n].tolist(),
                {"sku": f"SKU-{self.skus[n]:03d}", "kind": KINDS[self.kinds[n]], "n": n},
            )
            for n in range(start, stop)
        ]

    def exact_top(self, size: int, query: int, kind: str | None) -> set[int]:
        """The true top-5 among the first `size` points, by brute force."""
        scores = self.vectors[:size] @ self.queries[query]
        if kind is not None:
            scores = np.where(self.kinds[:size] == KINDS.index(kind), scores, -np.inf)
        return {int(n) for n in np.argsort(-scores)[:TOP]}


def episode_texts(
    size: int, seed: int
) -> tuple[list[str], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(KINDS), size)
    skus = rng.integers(0, SKUS, size)
    numbers = rng.integers(1, 400, (size, 3))
    notes = ["", "supplier is late again", "seasonal peak", "promotion next week", "ok"]
    reasons = ["too much stock", "discontinued soon", "price rise expected", "duplicate"]
    texts = []
    for n in range(size):
        sku, (a, b, c) = f"SKU-{skus[n]:03d}", numbers[n]
        kind = KINDS[kinds[n]]
        if kind == "low":
            text = low_text(sku, a, b, c)
        elif kind == "suggestion":
            urgency = ("low", "medium", "high")[a % 3]
            text = f"suggested ordering {b} of {sku} ({urgency})"
        elif kind == "decision":
            text = (
                f"reviewer approved ordering {b} of {sku}: {notes[a % len(notes)]}"
                if a % 3
                else f"reviewer rejected the restock of {sku}: {reasons[b % len(reasons)]}"
            )
        elif kind == "arrival":
            text = f"{b} of {sku} arrived for PO-{seed}-{n}"
        else:
            text = f"stockout of {sku}: {b % 40 + 1} asked, {a % 5} available"
        texts.append(text)
    return texts, kinds, skus


def query_text(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed * 1000 + n)
    a, b, c = rng.integers(1, 400, 3)
    sku = f"SKU-{rng.integers(0, SKUS):03d}"
    return low_text(sku, a, b, c)


def low_text(sku: str, a: int, b: int, c: int) -> str:
    return (
        f"low stock of {sku}: {a % 60} available, reorder point {b % 80}, lead time {c % 21} days"
    )


def embedded_texts(stem: Path, texts: list[str], *, query: bool) -> np.ndarray[Any, Any]:
    """The texts' e5 vectors, from the cache when an earlier run made them."""
    path = stem.with_name(f"{stem.name}-{len(texts)}.npy")
    if path.exists():
        cached: np.ndarray[Any, Any] = np.load(path)
        return cached
    from rich.progress import Progress

    from agentbus.memory.embeddings import _e5_model

    model = _e5_model()
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"embedding {len(texts)} texts with e5", total=len(texts))
        for first in range(0, len(texts), 256):
            batch = texts[first : first + 256]
            matrix = model.query(batch) if query else model.passage(batch)
            rows.append(np.asarray(matrix, dtype=np.float32).reshape(len(batch), DIM))
            progress.advance(task, len(batch))
    vectors = np.concatenate(rows)
    np.save(path, vectors)
    return vectors


class LoopWatch:
    """The longest the event loop went without running a 5 ms timer on time."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - started - 0.005)


@asynccontextmanager
async def watching() -> AsyncIterator[LoopWatch]:
    watch = LoopWatch()
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 3),
    }


async def measure(
    store: VectorStore, data: Data, size: int, queries: int, kind: str | None
) -> dict[str, float]:
    where = {"kind": kind} if kind else None
    for q in range(min(20, queries)):  # warm-up: caches, pages, the worker thread
        await store.search("bench", data.queries[q].tolist(), limit=TOP, where=where)
    samples, found = [], []
    for q in range(queries):
        vector = data.queries[q].tolist()
        started = time.perf_counter()
        hits = await store.search("bench", vector, limit=TOP, where=where)
        samples.append(time.perf_counter() - started)
        found.append({int(h.payload["n"]) for h in hits})
    # Exact answers only after the timing: numpy's threads keep spinning for a while
    # after a product and would slow the searches down.
    right = sum(len(f & data.exact_top(size, q, kind)) for q, f in enumerate(found))
    return {**percentiles(samples), "recall_at_5": round(right / (queries * TOP), 3)}


async def load(store: VectorStore, data: Data, start: int, stop: int) -> None:
    for first in range(start, stop, BATCH):
        await store.upsert("bench", data.points(first, min(stop, first + BATCH)))


async def embedded(data: Data, sizes: list[int], queries: int, folder: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    store = EdgeStore(folder)
    await store.ensure_collection("bench", DIM, indexed=("sku", "kind"))
    loaded = 0
    for size in sizes:
        async with watching() as watch:
            started = time.perf_counter()
            await load(store, data, loaded, size)
            loaded_at = time.perf_counter()
            await store.optimize("bench")  # wait for the background indexing to catch up
            indexed_at = time.perf_counter()
        print(f"embedded: {size} points loaded and indexed", file=sys.stderr)
        results[f"embedded_{size}"] = {
            "load_s": round(loaded_at - started, 1),
            "indexing_wait_s": round(indexed_at - loaded_at, 1),
            "max_event_loop_stall_ms": round(watch.worst * 1000, 1),
            "unfiltered": await measure(store, data, size, queries, None),
            "filtered_by_kind": await measure(store, data, size, queries, "decision"),
        }
        loaded = size
    await store.close()
    return results


async def baseline(data: Data, size: int, queries: int) -> dict[str, Any]:
    store = QdrantServerStore(client=AsyncQdrantClient(location=":memory:"))
    await store.ensure_collection("bench", DIM)
    await load(store, data, 0, size)
    result = {
        "queries": queries,
        "unfiltered": await measure(store, data, size, queries, None),
        "filtered_by_kind": await measure(store, data, size, queries, "decision"),
    }
    await store.close()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baseline-queries", type=int, default=50, help="local mode is slow")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--data",
        choices=["random", "clustered", "e5"],
        default="random",
        help="random unit vectors, vectors clustered around their SKU, or e5 embeddings of "
        "generated episode texts (needs the e5 extra; cached after the first run)",
    )
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    if args.data == "e5":
        data = Data.e5(sizes[-1], args.queries)
    else:
        data = Data.generated(sizes[-1], args.queries, clustered=args.data == "clustered")
    results: dict[str, Any] = {
        "benchmark": "memory_retrieval",
        "data": args.data,
        "dim": DIM,
        "top": TOP,
        "queries": args.queries,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="agentbus-vectors-") as folder:
        results.update(await embedded(data, sizes, args.queries, Path(folder)))
    if sizes[0] <= 20_000:  # local mode warns above 20k points and takes seconds per query
        results[f"qdrant_client_local_{sizes[0]}"] = await baseline(
            data, sizes[0], args.baseline_queries
        )
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["target"] = {"embedded_100000_p50_ms_max": 5.0}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
