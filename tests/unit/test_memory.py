"""Vector memory: the embedded engine and the Qdrant server path, one contract."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from qdrant_client import AsyncQdrantClient

from agentbus.memory import HashingEmbedder, OpenAIEmbedder, Point, VectorStore, point_id
from agentbus.memory.edge import EdgeStore
from agentbus.memory.server import QdrantServerStore
from tests.support.openai_server import FakeOpenAI


@pytest.fixture(params=["edge", "qdrant-client"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    made: VectorStore
    if request.param == "edge":
        made = EdgeStore(tmp_path)
    else:
        # qdrant-client's local mode runs the same client code path as a server would.
        made = QdrantServerStore(client=AsyncQdrantClient(location=":memory:"))
    yield made
    await made.close()


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


POINTS = [
    Point(point_id("e1"), unit(1, 0, 0, 0), {"sku": "A", "kind": "low"}),
    Point(point_id("e2"), unit(0.9, 0.1, 0, 0), {"sku": "B", "kind": "low"}),
    Point(point_id("e3"), unit(0, 1, 0, 0), {"sku": "A", "kind": "decision"}),
    Point(point_id("e4"), unit(0, 0, 1, 0), {"sku": "C", "kind": "low"}),
]


async def test_search_ranks_nearest_first_and_filters_exactly(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4, indexed=("sku", "kind"))
    await store.upsert("episodes", POINTS)
    hits = await store.search("episodes", unit(1, 0.05, 0, 0), limit=2)
    assert [h.payload["sku"] for h in hits] == ["A", "B"]
    assert hits[0].score >= hits[1].score
    only_a = await store.search("episodes", unit(1, 0, 0, 0), where={"sku": "A"})
    assert {h.payload["kind"] for h in only_a} == {"low", "decision"}
    both = await store.search("episodes", unit(1, 0, 0, 0), where={"sku": "A", "kind": "decision"})
    assert [h.id for h in both] == [point_id("e3")]


async def test_upsert_is_idempotent_by_id(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4)
    await store.upsert("episodes", POINTS)
    await store.upsert("episodes", POINTS)
    await store.ensure_collection("episodes", 4)
    assert await store.count("episodes") == len(POINTS)


async def test_unknown_collection_raises_key_error(store: VectorStore) -> None:
    with pytest.raises(KeyError):
        await store.search("nothing-here", unit(1, 0, 0, 0))


async def test_edge_store_keeps_points_across_reopen(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)
    await first.ensure_collection("episodes", 4)
    await first.upsert("episodes", POINTS)
    await first.close()
    again = EdgeStore(tmp_path)
    await again.ensure_collection("episodes", 4)
    assert await again.count("episodes") == len(POINTS)
    await again.close()


async def test_hashing_embedder_is_deterministic_normalized_and_similar_for_shared_words() -> None:
    embedder = HashingEmbedder(dim=128)
    a, b, c = await embedder.embed(
        ["low stock of SKU-001 chef knife", "low stock of SKU-001 chef knife again", "garden hose"]
    )
    assert a == (await HashingEmbedder(dim=128).embed(["low stock of SKU-001 chef knife"]))[0]
    assert len(a) == 128
    assert abs(sum(x * x for x in a) - 1) < 1e-9
    similar = sum(x * y for x, y in zip(a, b, strict=True))
    unrelated = sum(x * y for x, y in zip(a, c, strict=True))
    assert similar > 0.8 > unrelated


async def test_openai_embedder_over_http() -> None:
    async with FakeOpenAI() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        embedder = OpenAIEmbedder("embed-test", dim=16, client=client, batch=2)
        vectors = await embedder.embed(["one", "two", "three"])
    assert [len(v) for v in vectors] == [16, 16, 16]
    assert vectors[0] != vectors[1]
