"""A Qdrant server (`QDRANT_URL`) through qdrant-client: where users go at scale."""

from __future__ import annotations

from collections.abc import Sequence

from qdrant_client import AsyncQdrantClient, models

from agentbus.memory.base import Hit, Point, Where


class QdrantServerStore:
    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        client: AsyncQdrantClient | None = None,
    ) -> None:
        self.client = client or AsyncQdrantClient(url=url, api_key=api_key)

    async def ensure_collection(self, name: str, dim: int, indexed: Sequence[str] = ()) -> None:
        if not await self.client.collection_exists(name):
            await self.client.create_collection(
                name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
            for field in indexed:
                await self.client.create_payload_index(
                    name, field, field_schema=models.PayloadSchemaType.KEYWORD
                )

    async def upsert(self, name: str, points: Sequence[Point]) -> None:
        await self.client.upsert(
            name,
            points=[
                models.PointStruct(id=p.id, vector=list(p.vector), payload=p.payload)
                for p in points
            ],
        )

    async def search(
        self, name: str, vector: Sequence[float], *, limit: int = 10, where: Where | None = None
    ) -> list[Hit]:
        if not await self.client.collection_exists(name):
            raise KeyError(name)
        query_filter = (
            models.Filter(
                must=[
                    models.FieldCondition(key=k, match=models.MatchValue(value=v))
                    for k, v in where.items()
                ]
            )
            if where
            else None
        )
        response = await self.client.query_points(
            name, query=list(vector), limit=limit, query_filter=query_filter, with_payload=True
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    async def count(self, name: str) -> int:
        return int((await self.client.count(name, exact=True)).count)

    async def close(self) -> None:
        await self.client.close()
