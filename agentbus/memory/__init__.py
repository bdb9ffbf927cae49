"""Vector memory: a port, the embedded engine by default, a Qdrant server at scale.

The adapters are imported where chosen (`agentbus.memory.edge.EdgeStore`,
`agentbus.memory.server.QdrantServerStore`): qdrant-client is slow to import and
a process needs only one of them.
"""

from __future__ import annotations

from pathlib import Path

from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError
from agentbus.memory.base import Embedder, Hit, Point, VectorStore, Where, point_id
from agentbus.memory.embeddings import (
    E5Embedder,
    HashingEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)

# Native sizes of OpenAI's embedding models, for `openai:MODEL` without a dimension.
_OPENAI_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def open_vector_store(data_dir: Path, url: str | None, *, on_loop: bool = False) -> VectorStore:
    """A Qdrant server when `url` (QDRANT_URL) is given, else the embedded engine under
    `data_dir / "vectors"` (`on_loop`: called on the event loop, see `EdgeStore`). The
    server's key comes from QDRANT_API_KEY; on a cluster, QDRANT_SHARDS and
    QDRANT_REPLICATION_FACTOR shape the collections it creates."""
    if url:
        from agentbus.memory.server import QdrantServerStore

        env = load_environment()
        return QdrantServerStore(
            url,
            env.secret("qdrant_api_key"),
            shards=env.qdrant_shards,
            replicas=env.qdrant_replication_factor,
        )
    from agentbus.memory.edge import EdgeStore

    return EdgeStore(data_dir / "vectors", on_loop=on_loop)


def embedder_from_env() -> Embedder:
    """The embedder AGENTBUS_EMBEDDINGS names:

    - `hashing` (the default): offline and deterministic;
    - `e5`: multilingual-e5-small in this process (the e5 extra), with its query and
      passage prefixes;
    - `openai:MODEL:DIM`: an OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)
      asked for DIM dimensions; `openai:MODEL` takes the native size of a known OpenAI model;
    - `sentence-transformers:NAME_OR_PATH`: a local model (needs the package and torch).
    """
    choice = load_environment().embeddings.strip() or "hashing"
    kind, _, rest = choice.partition(":")
    if kind == "hashing" and not rest:
        return HashingEmbedder()
    if kind == "openai" and rest:
        # Model names may hold colons themselves (nomic-embed-text:latest): a dimension is digits.
        model, _, last = rest.rpartition(":")
        if model and last.isdigit() and int(last) > 0:
            return OpenAIEmbedder(model, dim=int(last))
        model = rest
        if model in _OPENAI_DIMS:
            return OpenAIEmbedder(model, dim=_OPENAI_DIMS[model], request_dim=False)
        raise ConfigurationError(
            f"AGENTBUS_EMBEDDINGS={choice!r}: give the dimension, as in openai:{model}:768"
        )
    if kind == "sentence-transformers" and rest:
        return SentenceTransformerEmbedder(rest)
    if kind == "e5" and not rest:
        return E5Embedder()
    raise ConfigurationError(
        f"AGENTBUS_EMBEDDINGS={choice!r}: use hashing, e5, openai:MODEL[:DIM] or "
        "sentence-transformers:NAME_OR_PATH"
    )


# Last: it builds on open_vector_store above.
from agentbus.memory.shared import shared_vector_store  # noqa: E402

__all__ = [
    "E5Embedder",
    "Embedder",
    "HashingEmbedder",
    "Hit",
    "OpenAIEmbedder",
    "Point",
    "SentenceTransformerEmbedder",
    "VectorStore",
    "Where",
    "embedder_from_env",
    "open_vector_store",
    "point_id",
    "shared_vector_store",
]
