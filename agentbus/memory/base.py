"""The vector memory port: points with payloads, searched by similarity.

Domain-free: the application decides what a point means (an episode, a product)
and speaks only to these Protocols; the adapters live beside this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# An exact-match payload filter; every condition must hold.
# Equality per key; a list value matches any of its items.
Where = Mapping[str, str | int | bool | Sequence[str] | Sequence[int]]


@dataclass(frozen=True)
class Point:
    """A vector and its payload; `id` is a UUID string (see `point_id`)."""

    id: str
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """A point found by a search; `score` is cosine similarity, higher is nearer."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """Collections of points. Every adapter passes the same contract tests."""

    async def ensure_collection(self, name: str, dim: int, indexed: Sequence[str] = ()) -> None:
        """Create `name` for `dim`-dimension vectors (cosine) unless it exists, and keyword
        payload indexes on the fields in `indexed`. Idempotent; raises ConfigurationError when
        the collection exists with another dimension."""
        ...

    async def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id: writing the same point twice changes nothing.

        Raises KeyError for a collection that does not exist.
        """
        ...

    async def search(
        self, name: str, vector: Sequence[float], *, limit: int = 10, where: Where | None = None
    ) -> list[Hit]:
        """Nearest first by cosine similarity; `where` is an exact-match payload filter
        (all conditions ANDed; `True` matches booleans only, never the integer 1).

        Raises KeyError for a collection that does not exist.
        """
        ...

    async def count(self, name: str) -> int:
        """Points in `name`; raises KeyError for a collection that does not exist."""
        ...

    async def close(self) -> None: ...


class Embedder(Protocol):
    """Texts to vectors of `dim` dimensions; `name` tells which model made them.

    `embed` is for what is stored (passages), `embed_queries` for what is searched
    for: models trained with a prefix for each (e5's "query: " and "passage: ")
    need to know which is which; the others embed both the same way.
    """

    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]: ...


# Fixed forever: changing it would change every point id already stored.
_NAMESPACE = uuid.UUID("2c7e8f1a-5b4d-4e0b-9a63-0d1f6f3b7c21")


def point_id(*parts: str) -> str:
    """A deterministic point id (uuid5) from what caused the point, such as an event id:
    a redelivered event upserts the same point instead of a duplicate."""
    # A separator that cannot occur in ids keeps ("ab", "c") apart from ("a", "bc").
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
