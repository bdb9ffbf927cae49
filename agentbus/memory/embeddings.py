"""Embedders: a deterministic offline default, an OpenAI-compatible endpoint, a local model."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

from agentbus.errors import ConfigurationError

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Words and character trigrams hashed into signed buckets, L2-normalized.

    No model, no download, the same vector on every machine: texts that share
    words land near each other, which is what episodes about one SKU need.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        lowered = text.lower()
        words = _WORD.findall(lowered)
        features = [f"w:{w}" for w in words]
        features += [f"c:{w[i : i + 3]}" for w in words for i in range(max(len(w) - 2, 1))]
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            sign = 1.0 if digest[4] & 1 else -1.0
            vector[bucket] += sign * (2.0 if feature.startswith("w:") else 1.0)
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]


class OpenAIEmbedder:
    """An OpenAI-compatible `/v1/embeddings` endpoint (`OPENAI_BASE_URL`, `OPENAI_API_KEY`)."""

    def __init__(self, model: str, *, dim: int, client: Any = None, batch: int = 256) -> None:
        import openai

        self.name = f"openai:{model}"
        self.model = model
        self.dim = dim
        self.batch = batch
        self.client = client or openai.AsyncOpenAI()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            chunk = list(texts[start : start + self.batch])
            response = await self.client.embeddings.create(
                model=self.model, input=chunk, dimensions=self.dim
            )
            vectors.extend(list(item.embedding) for item in response.data)
        return vectors


class SentenceTransformerEmbedder:
    """A local sentence-transformers model: the optional `local-embeddings` extra."""

    def __init__(self, model: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigurationError(
                "sentence-transformers is not installed: uv sync --extra local-embeddings"
            ) from exc
        self._model = SentenceTransformer(model)
        self.name = f"sentence-transformers:{model}"
        self.dim = int(self._model.get_sentence_embedding_dimension() or 384)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import asyncio

        vectors = await asyncio.to_thread(
            self._model.encode, list(texts), normalize_embeddings=True
        )
        return [list(map(float, v)) for v in vectors]
