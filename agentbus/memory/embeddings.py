"""Embedders: a deterministic offline default, an OpenAI-compatible endpoint, a local model."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentbus.errors import ConfigurationError, TransientError

if TYPE_CHECKING:
    import openai

_TOKEN = re.compile(r"\w+")
_WORD_WEIGHT = 2.0  # a shared word says more than a shared trigram


@functools.lru_cache(maxsize=1 << 16)
def _slot(feature: str, dim: int) -> tuple[int, float]:
    """The bucket and sign of a feature: blake2b, so the same on every machine and run
    (Python's `hash` of a str changes with each process)."""
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    # Signed buckets: collisions of unrelated features cancel out on average instead of adding up.
    return int.from_bytes(digest[:4], "little") % dim, (1.0 if digest[4] & 1 else -1.0)


class HashingEmbedder:
    """Words and character trigrams of the lower-cased text, hashed into signed buckets,
    L2-normalized.

    No model and no download, the same vector on every machine: texts that share
    words (a SKU, a product name) land near each other, and trigrams let
    "knife" meet "knives". It knows no synonyms; a real model does.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _TOKEN.findall(text.lower()):
            bucket, sign = _slot("w:" + word, self.dim)
            vector[bucket] += sign * _WORD_WEIGHT
            padded = f"<{word}>"  # marks word edges, so a prefix differs from a middle
            for i in range(len(padded) - 2):
                bucket, sign = _slot("c:" + padded[i : i + 3], self.dim)
                vector[bucket] += sign
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            return vector  # no words at all: the zero vector, similar to nothing
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]


class OpenAIEmbedder:
    """An OpenAI-compatible `/v1/embeddings` endpoint (`OPENAI_BASE_URL`, `OPENAI_API_KEY`).

    `dim` is what the collection is created with. With `request_dim` (the default)
    the endpoint is asked for that many dimensions, which text-embedding-3 models
    honour by shortening; endpoints that reject the parameter need `request_dim=False`
    and their model's own dimension. Inputs go in batches of `batch_size`.
    """

    def __init__(
        self,
        model: str,
        *,
        dim: int,
        client: openai.AsyncOpenAI | None = None,
        batch_size: int = 256,
        request_dim: bool = True,
    ) -> None:
        if client is None:
            import openai  # imported here: it is slow to import and most runs never need it

            # Local servers (vLLM, Ollama) take any key; the client refuses to start without one.
            client = openai.AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "not-needed")
        self.client = client
        self.model = model
        self.name = f"openai:{model}"
        self.dim = dim
        self.batch_size = batch_size
        self.request_dim = request_dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                if self.request_dim:
                    response = await self.client.embeddings.create(
                        model=self.model, input=batch, dimensions=self.dim
                    )
                else:
                    response = await self.client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                # The client has already retried 429s and 5xx with backoff; what is left may
                # still pass later, and an event is never at fault for an embedding endpoint.
                raise TransientError(f"embeddings from {self.model}: {exc}") from exc
            ordered = sorted(response.data, key=lambda item: item.index)
            if len(ordered) != len(batch):
                raise TransientError(
                    f"embeddings from {self.model}: {len(ordered)} vectors for {len(batch)} inputs"
                )
            for item in ordered:
                if len(item.embedding) != self.dim:
                    raise ConfigurationError(
                        f"embeddings from {self.model} have {len(item.embedding)} dimensions, "
                        f"not {self.dim}"
                    )
                vectors.append([float(x) for x in item.embedding])
        return vectors


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (optional: it brings torch)."""

    def __init__(self, model_name_or_path: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigurationError(
                "AGENTBUS_EMBEDDINGS=sentence-transformers:... needs the sentence-transformers "
                "package (and torch): pip install sentence-transformers; "
                "or use AGENTBUS_EMBEDDINGS=hashing"
            ) from exc
        self._model: Any = SentenceTransformer(model_name_or_path)
        self.name = f"sentence-transformers:{model_name_or_path}"
        dim = self._model.get_sentence_embedding_dimension()
        if not dim:
            raise ConfigurationError(
                f"{model_name_or_path}: the model does not state its dimension"
            )
        self.dim = int(dim)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # Inference is CPU-heavy and releases the GIL in torch: off the event loop.
        vectors = await asyncio.to_thread(
            self._model.encode, list(texts), normalize_embeddings=True
        )
        return [[float(x) for x in v] for v in vectors]
