"""Vector memory: one contract for the embedded engine and the Qdrant server path;
the embedders, with the OpenAI one over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import math
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from qdrant_client import AsyncQdrantClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentbus.errors import ConfigurationError, TransientError
from agentbus.memory import (
    HashingEmbedder,
    OpenAIEmbedder,
    Point,
    VectorStore,
    embedder_from_env,
    open_vector_store,
    point_id,
)
from agentbus.memory.edge import EdgeStore
from agentbus.memory.server import QdrantServerStore

ROOT = Path(__file__).resolve().parents[2]

# --- the store contract, run against every adapter ---------------------------------


@pytest.fixture(params=["edge", "edge-on-loop", "qdrant-client-local"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    made: VectorStore
    if request.param.startswith("edge"):
        made = EdgeStore(tmp_path, on_loop=request.param == "edge-on-loop")
    else:
        # qdrant-client's local mode answers the same calls a server does.
        made = QdrantServerStore(client=AsyncQdrantClient(location=":memory:"))
    yield made
    await made.close()


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


POINTS = [
    Point(point_id("e1"), unit(1, 0, 0, 0), {"sku": "A", "kind": "low", "n": 1, "open": True}),
    Point(point_id("e2"), unit(0.9, 0.1, 0, 0), {"sku": "B", "kind": "low", "n": 2, "open": False}),
    Point(point_id("e3"), unit(0, 1, 0, 0), {"sku": "A", "kind": "decision", "n": 1, "open": 1}),
    Point(point_id("e4"), unit(0, 0, 1, 0), {"sku": "C", "kind": "low", "n": 3, "open": True}),
]


async def test_search_ranks_the_nearest_first(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4, indexed=("sku", "kind"))
    await store.upsert("episodes", POINTS)
    hits = await store.search("episodes", unit(1, 0.05, 0, 0), limit=3)
    assert [h.id for h in hits] == [point_id("e1"), point_id("e2"), point_id("e3")]
    assert hits[0].score > hits[1].score > hits[2].score
    assert hits[0].payload == POINTS[0].payload
    exact = await store.search("episodes", unit(0, 0, 1, 0), limit=1)
    assert exact[0].id == point_id("e4")
    assert exact[0].score == pytest.approx(1.0, abs=1e-5)


async def test_where_filters_exactly_with_all_conditions(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4, indexed=("sku", "kind"))
    await store.upsert("episodes", POINTS)
    query = unit(1, 0, 0, 0)

    async def ids(**where: Any) -> set[str]:
        return {h.id for h in await store.search("episodes", query, where=where)}

    assert await ids(sku="A") == {point_id("e1"), point_id("e3")}
    assert await ids(sku="A", kind="decision") == {point_id("e3")}
    assert await ids(n=1) == {point_id("e1"), point_id("e3")}
    # A boolean matches booleans only: the integer 1 of e3 is not True.
    assert await ids(open=True) == {point_id("e1"), point_id("e4")}
    assert await ids(open=False) == {point_id("e2")}
    assert await ids(open=1) == {point_id("e3")}
    assert await ids(sku="A", kind="low", n=3) == set()
    assert await ids(sku="nobody") == set()
    # A list matches any of its items.
    assert await ids(sku=["A", "nobody"]) == {point_id("e1"), point_id("e3")}
    assert await ids(sku=["A", "B"], kind="decision") == {point_id("e3")}
    assert await ids(n=[1, 7]) == {point_id("e1"), point_id("e3")}
    assert await ids(sku=["nobody"]) == set()


async def test_upsert_is_idempotent_by_id(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4)
    await store.upsert("episodes", POINTS)
    await store.upsert("episodes", POINTS)
    await store.ensure_collection("episodes", 4)
    assert await store.count("episodes") == len(POINTS)
    changed = Point(POINTS[0].id, POINTS[0].vector, {"sku": "A", "kind": "changed"})
    await store.upsert("episodes", [changed])
    await store.upsert("episodes", [])
    assert await store.count("episodes") == len(POINTS)
    hits = await store.search("episodes", POINTS[0].vector, limit=1)
    assert hits[0].payload == {"sku": "A", "kind": "changed"}


async def test_limit_bounds_the_hits(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4)
    await store.upsert("episodes", POINTS)
    assert len(await store.search("episodes", unit(1, 1, 1, 1), limit=2)) == 2
    assert len(await store.search("episodes", unit(1, 1, 1, 1))) == len(POINTS)


async def test_a_missing_collection_raises_key_error(store: VectorStore) -> None:
    with pytest.raises(KeyError):
        await store.search("nothing-here", unit(1, 0, 0, 0))
    with pytest.raises(KeyError):
        await store.count("nothing-here")
    with pytest.raises(KeyError):
        await store.upsert("nothing-here", POINTS)


async def test_another_dimension_is_a_configuration_error(store: VectorStore) -> None:
    await store.ensure_collection("episodes", 4)
    with pytest.raises(ConfigurationError):
        await store.ensure_collection("episodes", 8)


# --- the embedded engine -------------------------------------------------------------


def folders(path: Path) -> list[str]:
    """The shard folders (the store's `.owner` lock file stays by design)."""
    return sorted(p.name for p in path.iterdir() if p.is_dir())


async def test_edge_store_keeps_points_and_indexes_across_reopen(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)
    await first.ensure_collection("episodes", 4, indexed=("sku",))
    await first.upsert("episodes", POINTS)
    await first.close()
    again = EdgeStore(tmp_path)
    # A search may come before ensure_collection: the collection loads from disk.
    hits = await again.search("episodes", unit(1, 0, 0, 0), where={"sku": "A"})
    assert {h.id for h in hits} == {point_id("e1"), point_id("e3")}
    await again.ensure_collection("episodes", 4, indexed=("sku",))
    with pytest.raises(ConfigurationError):
        await again.ensure_collection("episodes", 8)
    assert await again.count("episodes") == len(POINTS)
    await again.close()
    third = EdgeStore(tmp_path)
    with pytest.raises(ConfigurationError):
        await third.ensure_collection("episodes", 8)  # checked on load as well
    await third.close()


def test_edge_store_points_survive_a_process_that_never_closes(tmp_path: Path) -> None:
    # The write-ahead log makes an upsert durable when it returns, without a flush.
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from pathlib import Path
        from agentbus.memory import Point, point_id
        from agentbus.memory.edge import EdgeStore

        async def main():
            store = EdgeStore(Path({str(tmp_path)!r}))
            await store.ensure_collection("episodes", 2)
            await store.upsert("episodes", [Point(point_id("x"), [1.0, 0.0], {{"k": "v"}})])
            os._exit(0)

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)

    async def reopen() -> int:
        store = EdgeStore(tmp_path)
        try:
            return await store.count("episodes")
        finally:
            await store.close()

    assert asyncio.run(reopen()) == 1


@pytest.mark.parametrize("on_loop", [False, True], ids=["worker", "on-loop"])
async def test_edge_store_indexes_in_the_background_and_keeps_writes_made_meanwhile(
    tmp_path: Path, on_loop: bool
) -> None:
    # A 1 KB threshold makes 32 points of 8 dimensions enough to index. On the loop,
    # the calls and the worker thread's swap of the indexed copy take turns.
    store = EdgeStore(tmp_path, indexing_threshold_kb=1, on_loop=on_loop)
    await store.ensure_collection("episodes", 8, indexed=("kind",))
    rng = random.Random(3)

    def points(start: int, count: int) -> list[Point]:
        return [
            Point(
                point_id(str(n)),
                unit(*(rng.gauss(0, 1) for _ in range(8))),
                {"kind": "late" if n >= 200 else "early"},
            )
            for n in range(start, start + count)
        ]

    early = points(0, 200)
    await store.upsert("episodes", early)  # crosses the threshold: a child indexes a copy
    assert store._collections["episodes"].run is not None
    late = points(200, 50)
    await store.upsert("episodes", late)  # lands while the child works
    await store.optimize("episodes")
    assert await store.count("episodes") == 250
    for point in (early[7], late[0], late[-1]):
        assert (await store.search("episodes", point.vector, limit=1))[0].id == point.id
    assert len(await store.search("episodes", late[3].vector, where={"kind": "late"})) == 10
    indexed = store._collections["episodes"].shard.info().indexed_vectors_count
    assert indexed >= 200
    more = points(250, 40)
    await store.upsert("episodes", more)  # another run, with nothing to replay this time
    await store.optimize("episodes")
    assert await store.count("episodes") == 290
    assert (await store.search("episodes", more[5].vector, limit=1))[0].id == more[5].id
    await store.close()
    assert folders(tmp_path) == ["episodes"]
    again = EdgeStore(tmp_path)
    assert await again.count("episodes") == 290
    await again.close()


async def test_edge_store_recovers_a_swap_cut_short(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    await store.ensure_collection("episodes", 4)
    await store.upsert("episodes", POINTS)
    await store.close()
    # As if the process died between the two renames of a swap.
    (tmp_path / "episodes").rename(tmp_path / "episodes.retired")
    (tmp_path / "episodes.indexing").mkdir()
    again = EdgeStore(tmp_path)
    assert await again.count("episodes") == len(POINTS)
    await again.close()
    assert folders(tmp_path) == ["episodes"]


async def test_edge_store_refuses_names_that_are_not_folder_names(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    for name in ("../escape", "a.b", ""):
        with pytest.raises(ValueError, match="collection name"):
            await store.ensure_collection(name, 4)
    await store.close()


def test_a_store_needs_a_url_or_a_client() -> None:
    with pytest.raises(ConfigurationError):
        QdrantServerStore()


async def test_open_vector_store_picks_the_server_only_for_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded = open_vector_store(tmp_path, None)
    assert isinstance(embedded, EdgeStore)
    assert embedded.path == tmp_path / "vectors"
    await embedded.close()
    made: list[dict[str, Any]] = []

    class Client:  # the real one would probe the URL from a thread of its own
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        async def close(self) -> None:
            pass

    monkeypatch.setattr("agentbus.memory.server.AsyncQdrantClient", Client)
    monkeypatch.setenv("QDRANT_API_KEY", "secret")
    server = open_vector_store(tmp_path, "http://qdrant:6333")
    assert isinstance(server, QdrantServerStore)
    assert made == [{"url": "http://qdrant:6333", "api_key": "secret"}]
    await server.close()


# --- embedders ------------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_embedder_is_normalized_and_ranks_shared_words_higher() -> None:
    embedder = HashingEmbedder()
    assert embedder.dim == 384
    query, near, far, other = await embedder.embed(
        [
            "low stock of SKU-001 chef knife",
            "Chef knife SKU-001: stock is low again",
            "garden hose arrived for the spring",
            "invoice paid by card",
        ]
    )
    assert all(len(v) == 384 for v in (query, near, far, other))
    assert sum(x * x for x in query) == pytest.approx(1.0)
    assert cosine(query, near) > 0.5
    assert cosine(query, near) > cosine(query, far) + 0.3
    assert cosine(query, near) > cosine(query, other) + 0.3
    assert (await embedder.embed([""]))[0] == [0.0] * 384


def test_hashing_embedder_is_the_same_in_every_process() -> None:
    text = "Low stock of SKU-001 chef knife"
    here = HashingEmbedder(dim=64).vector(text)
    assert here == HashingEmbedder(dim=64).vector(text)
    script = (
        "import json; from agentbus.memory import HashingEmbedder; "
        f"print(json.dumps(HashingEmbedder(dim=64).vector({text!r})))"
    )
    # A different hash seed would change Python's hash(); it must not change the vector.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    assert json.loads(out.stdout) == here


@dataclass
class EmbeddingsServer:
    """A tiny OpenAI-compatible /v1/embeddings endpoint: the real client talks HTTP to it."""

    fail_with: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @staticmethod
    def vector_of(text: str, dim: int) -> list[float]:
        return [float(len(text) + i) for i in range(dim)]

    async def embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if self.fail_with is not None:
            return JSONResponse({"error": {"message": "scripted"}}, status_code=self.fail_with)
        dim = int(body.get("dimensions") or 8)
        data = []
        for index, text in enumerate(body["input"]):
            vector = self.vector_of(text, dim)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        data.reverse()  # the index, not the order, says which input a vector belongs to
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[EmbeddingsServer]:
        app = Starlette(routes=[Route("/v1/embeddings", self.embeddings, methods=["POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            await task
            sock.close()

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="test-key", max_retries=0
        )


@pytest.fixture
async def embeddings_server() -> AsyncIterator[EmbeddingsServer]:
    async with EmbeddingsServer().serve() as server:
        yield server


async def test_openai_embedder_batches_and_keeps_the_order(
    embeddings_server: EmbeddingsServer,
) -> None:
    embedder = OpenAIEmbedder("embed-test", dim=4, client=embeddings_server.client(), batch_size=2)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await embedder.embed(texts)
    assert vectors == [EmbeddingsServer.vector_of(t, 4) for t in texts]
    assert [r["input"] for r in embeddings_server.requests] == [
        ["a", "bb"],
        ["ccc", "dddd"],
        ["eeeee"],
    ]
    assert all(
        r["dimensions"] == 4 and r["model"] == "embed-test" for r in embeddings_server.requests
    )
    assert embedder.name == "openai:embed-test"


async def test_openai_embedder_checks_the_dimension_it_gets(
    embeddings_server: EmbeddingsServer,
) -> None:
    native = OpenAIEmbedder("m", dim=8, client=embeddings_server.client(), request_dim=False)
    assert len((await native.embed(["x"]))[0]) == 8
    assert "dimensions" not in embeddings_server.requests[-1]
    wrong = OpenAIEmbedder("m", dim=16, client=embeddings_server.client(), request_dim=False)
    with pytest.raises(ConfigurationError, match="8 dimensions"):
        await wrong.embed(["x"])


async def test_openai_embedder_failures_are_transient(
    embeddings_server: EmbeddingsServer,
) -> None:
    embeddings_server.fail_with = 503
    embedder = OpenAIEmbedder("m", dim=4, client=embeddings_server.client())
    with pytest.raises(TransientError):
        await embedder.embed(["x"])


def test_embedder_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTBUS_EMBEDDINGS", raising=False)
    assert isinstance(embedder_from_env(), HashingEmbedder)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    cases = {
        "openai:text-embedding-3-small:256": ("text-embedding-3-small", 256, True),
        "openai:text-embedding-3-large": ("text-embedding-3-large", 3072, False),
        "openai:nomic-embed-text:latest:768": ("nomic-embed-text:latest", 768, True),
    }
    for setting, (model, dim, request_dim) in cases.items():
        monkeypatch.setenv("AGENTBUS_EMBEDDINGS", setting)
        embedder = embedder_from_env()
        assert isinstance(embedder, OpenAIEmbedder)
        assert (embedder.model, embedder.dim, embedder.request_dim) == (model, dim, request_dim)
    for bad in ("openai:unknown-model", "openai:", "hashing:9", "word2vec"):
        monkeypatch.setenv("AGENTBUS_EMBEDDINGS", bad)
        with pytest.raises(ConfigurationError):
            embedder_from_env()


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed",
)
def test_sentence_transformers_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTBUS_EMBEDDINGS", "sentence-transformers:all-MiniLM-L6-v2")
    with pytest.raises(ConfigurationError, match="pip install sentence-transformers"):
        embedder_from_env()


async def test_a_cluster_gets_collections_sharded_and_replicated_as_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    created: list[dict[str, Any]] = []

    class Recording(AsyncQdrantClient):
        """Qdrant's local mode, recording what a collection is created with (local
        mode itself has no shards or replicas to show)."""

        def __init__(self, **_: Any) -> None:
            super().__init__(location=":memory:")

        async def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
            created.append(kwargs)
            return await super().create_collection(collection_name, **kwargs)

    monkeypatch.setattr("agentbus.memory.server.AsyncQdrantClient", Recording)
    monkeypatch.setenv("QDRANT_SHARDS", "3")
    monkeypatch.setenv("QDRANT_REPLICATION_FACTOR", "2")
    store = open_vector_store(tmp_path, "http://qdrant:6333")
    await store.ensure_collection("episodes", 8)
    assert created[0]["shard_number"] == 3
    assert created[0]["replication_factor"] == 2
    await store.close()
    monkeypatch.setenv("QDRANT_REPLICATION_FACTOR", "none")
    with pytest.raises(ConfigurationError, match="QDRANT_REPLICATION_FACTOR"):
        open_vector_store(tmp_path, "http://qdrant:6333")
