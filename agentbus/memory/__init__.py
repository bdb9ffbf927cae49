"""Vector memory: a port, the embedded engine by default, a Qdrant server at scale."""

from __future__ import annotations

import os
from pathlib import Path

from agentbus.errors import ConfigurationError
from agentbus.memory.base import Embedder, Hit, Point, VectorStore, point_id
from agentbus.memory.embeddings import HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder


def open_vector_store(data_dir: Path, url: str | None) -> VectorStore:
    """A Qdrant server when `url` is given, else the embedded engine under `data_dir`."""
    if url:
        from agentbus.memory.server import QdrantServerStore

        return QdrantServerStore(url, api_key=os.environ.get("QDRANT_API_KEY") or None)
    from agentbus.memory.edge import EdgeStore

    return EdgeStore(data_dir / "vectors")


def embedder_from_env() -> Embedder:
    """`AGENTBUS_EMBEDDINGS`: `hashing` (default), `openai:MODEL[:DIM]` or
    `sentence-transformers:NAME`."""
    choice = os.environ.get("AGENTBUS_EMBEDDINGS", "hashing")
    kind, _, rest = choice.partition(":")
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "openai" and rest:
        model, _, dim = rest.partition(":")
        return OpenAIEmbedder(model, dim=int(dim or 1536))
    if kind == "sentence-transformers" and rest:
        return SentenceTransformerEmbedder(rest)
    raise ConfigurationError(
        f"AGENTBUS_EMBEDDINGS={choice!r}: use hashing, openai:MODEL[:DIM] or "
        "sentence-transformers:NAME"
    )


__all__ = [
    "Embedder",
    "HashingEmbedder",
    "Hit",
    "OpenAIEmbedder",
    "Point",
    "VectorStore",
    "embedder_from_env",
    "open_vector_store",
    "point_id",
]
