"""The vector memory port: points with payloads, searched by similarity."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Where = Mapping[str, str | int | bool]


@dataclass(frozen=True)
class Point:
    id: str
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    async def ensure_collection(self, name: str, dim: int, indexed: Sequence[str] = ()) -> None: ...

    async def upsert(self, name: str, points: Sequence[Point]) -> None: ...

    async def search(
        self, name: str, vector: Sequence[float], *, limit: int = 10, where: Where | None = None
    ) -> list[Hit]:
        """Nearest first by cosine similarity; `where` is an exact-match payload filter.

        Raises KeyError for a collection that does not exist.
        """
        ...

    async def count(self, name: str) -> int: ...

    async def close(self) -> None: ...


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


_NAMESPACE = uuid.UUID("2c7e8f1a-5b4d-4e0b-9a63-0d1f6f3b7c21")


def point_id(*parts: str) -> str:
    """A deterministic point id: the same event upserts the same point."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
