"""A Qdrant server (`QDRANT_URL`) through qdrant-client: where users go at scale.

Tests hand it an `AsyncQdrantClient(location=":memory:")`: qdrant-client's local
mode answers the same calls (collections, upsert, query_points with a Filter), so
this code path runs without a server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from agentbus.errors import ConfigurationError
from agentbus.memory.base import Hit, Point, Where


@contextmanager
def _missing_is_key_error(name: str) -> Iterator[None]:
    """A missing collection raises KeyError, as the port says, whoever answers."""
    try:
        yield
    except UnexpectedResponse as exc:  # a server
        if exc.status_code == 404:
            raise KeyError(name) from exc
        raise
    except ValueError as exc:  # qdrant-client's local mode
        if f"Collection {name} not found" in str(exc):
            raise KeyError(name) from exc
        raise


def _filter(where: Where | None) -> models.Filter | None:
    if not where:
        return None
    return models.Filter(
        must=[
            models.FieldCondition(
                key=k,
                match=models.MatchValue(value=v)
                if isinstance(v, str | int | bool)
                else models.MatchAny(any=list(v)),
            )
            for k, v in where.items()
        ]
    )


class QdrantServerStore:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: AsyncQdrantClient | None = None,
        shards: int = 1,
        replicas: int = 1,
    ) -> None:
        # On a Qdrant cluster: shards spread a collection over nodes, and each shard
        # is kept on `replicas` nodes, so losing one node loses no episode.
        self.shards = shards
        self.replicas = replicas
        if client is None:
            if not url:
                raise ConfigurationError("QdrantServerStore needs a url or a client")
            client = AsyncQdrantClient(url=url, api_key=api_key)
        self.client = client

    async def ensure_collection(self, name: str, dim: int, indexed: Sequence[str] = ()) -> None:
        if not await self.client.collection_exists(name):
            try:
                await self.client.create_collection(
                    name,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                    shard_number=self.shards,
                    replication_factor=self.replicas,
                )
            except UnexpectedResponse as exc:
                # Another process created it first (409 Conflict): what we wanted.
                if exc.status_code != 409:
                    raise
        info = await self.client.get_collection(name)
        vectors = info.config.params.vectors
        if isinstance(vectors, models.VectorParams) and vectors.size != dim:
            raise ConfigurationError(
                f"Qdrant collection {name!r} holds {vectors.size}-dimension vectors, not {dim}"
            )
        for field in indexed:
            if field not in info.payload_schema:
                await self.client.create_payload_index(
                    name, field, field_schema=models.PayloadSchemaType.KEYWORD
                )

    async def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        with _missing_is_key_error(name):
            # wait=True: a search right after sees the points, as it does on the embedded store.
            await self.client.upsert(
                name,
                points=[
                    models.PointStruct(id=p.id, vector=list(p.vector), payload=p.payload)
                    for p in points
                ],
                wait=True,
            )

    async def search(
        self, name: str, vector: Sequence[float], *, limit: int = 10, where: Where | None = None
    ) -> list[Hit]:
        with _missing_is_key_error(name):
            response = await self.client.query_points(
                name,
                query=list(vector),
                limit=limit,
                query_filter=_filter(where),
                with_payload=True,
            )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    async def count(self, name: str) -> int:
        with _missing_is_key_error(name):
            result = await self.client.count(name, exact=True)
        return int(result.count)

    async def close(self) -> None:
        await self.client.close()
