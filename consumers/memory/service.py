"""The memory service: what agents recall, written to the vector store.

Two collections. `restock-episodes`: episodes of the restock story.
`product-catalog`: one point per product (its id derives from the SKU, so an
update replaces it), for agents that look for similar products.

Each episode is one event told as a short text (what the embedder sees) with a
payload of facts (what filters and the agent read): a low-stock signal, a
suggestion, a reviewer's decision and its reason, an arrival, a stockout. Point
ids derive from event ids, so an upsert repeated after a redelivery changes
nothing: at-least-once delivery is enough here, with no transaction to share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentbus.envelope import Event
from agentbus.memory import Embedder, Point, VectorStore, embedder_from_env, point_id
from agentbus.memory.shared import shared_vector_store
from agentbus.service import Context, Service, ServiceEnv
from events import (
    InventoryLow,
    InventoryReservationFailed,
    ProductUpserted,
    RestockApproved,
    RestockRecommended,
    RestockRejected,
    StockReceived,
)

NAME = "memory"
COLLECTION = "restock-episodes"
CATALOG = "product-catalog"
# A product goes into the catalog collection, every other one into the episodes.
Remembered = (
    ProductUpserted
    | InventoryLow
    | RestockRecommended
    | RestockApproved
    | RestockRejected
    | StockReceived
    | InventoryReservationFailed
)


def episode(event: Event[Remembered]) -> list[tuple[str, dict[str, Any]]]:
    """(text, payload) per SKU the event speaks of; empty when it says nothing to remember."""
    data = event.data
    base = {"event_id": event.id, "at": event.time.isoformat(), "type": event.type}
    if isinstance(data, InventoryLow):
        text = (
            f"low stock of {data.sku}: {data.available} available, reorder point "
            f"{data.reorder_point}, lead time {data.lead_time_days} days"
        )
        return [
            (
                text,
                {
                    **base,
                    "kind": "low",
                    "sku": data.sku,
                    "available": data.available,
                    "reorder_point": data.reorder_point,
                    "lead_time_days": data.lead_time_days,
                },
            )
        ]
    if isinstance(data, RestockRecommended):
        text = f"suggested ordering {data.quantity} of {data.sku} ({data.urgency})"
        return [
            (
                text,
                {
                    **base,
                    "kind": "suggestion",
                    "sku": data.sku,
                    "quantity": data.quantity,
                    "urgency": data.urgency,
                    "recommendation_id": data.recommendation_id,
                    "model": data.model,
                },
            )
        ]
    if isinstance(data, RestockApproved):
        text = f"reviewer approved ordering {data.quantity} of {data.sku}: {data.note or ''}"
        return [
            (
                text,
                {
                    **base,
                    "kind": "decision",
                    "decision": "approved",
                    "sku": data.sku,
                    "quantity": data.quantity,
                    "note": data.note,
                    "recommendation_id": data.recommendation_id,
                },
            )
        ]
    if isinstance(data, RestockRejected):
        text = f"reviewer rejected the restock of {data.sku}: {data.reason}"
        return [
            (
                text,
                {
                    **base,
                    "kind": "decision",
                    "decision": "rejected",
                    "sku": data.sku,
                    "reason": data.reason,
                    "recommendation_id": data.recommendation_id,
                },
            )
        ]
    if isinstance(data, StockReceived):
        if data.purchase_order_id is None:
            return []
        text = f"{data.quantity} of {data.sku} arrived for {data.purchase_order_id}"
        return [
            (
                text,
                {
                    **base,
                    "kind": "arrival",
                    "sku": data.sku,
                    "quantity": data.quantity,
                    "purchase_order_id": data.purchase_order_id,
                },
            )
        ]
    if isinstance(data, InventoryReservationFailed):
        return [
            (
                f"stockout of {s.sku}: {s.requested} asked, {s.available} available",
                {
                    **base,
                    "kind": "stockout",
                    "sku": s.sku,
                    "requested": s.requested,
                    "available": s.available,
                },
            )
            for s in data.shortages
        ]
    return []


def catalog_entry(data: ProductUpserted) -> tuple[str, str, dict[str, Any]]:
    """A product as the embedder sees it (what it is) and as filters see it."""
    text = f"{data.name}. {data.description}"
    payload = {"sku": data.sku, "name": data.name, "category": data.category}
    return point_id("product", data.sku), text, payload


class MemoryWriter:
    def __init__(self, store: VectorStore | None, embedder: Embedder | None) -> None:
        self.store = store
        self.embedder = embedder
        self.written = 0

    async def start(self, env: ServiceEnv) -> None:
        if self.embedder is None:
            self.embedder = embedder_from_env()
        if self.store is None:
            self.store = shared_vector_store(env.settings)
        await self.store.ensure_collection(COLLECTION, self.embedder.dim, indexed=("sku", "kind"))
        await self.store.ensure_collection(CATALOG, self.embedder.dim, indexed=("sku", "category"))

    async def write(self, events: Sequence[Event[Remembered]], ctx: Context) -> None:
        await self._put(
            CATALOG,
            [
                catalog_entry(event.data)
                for event in events
                if isinstance(event.data, ProductUpserted)
            ],
        )
        await self._put(
            COLLECTION,
            [
                (point_id(event.id, str(n)), text, payload)
                for event in events
                if not isinstance(event.data, ProductUpserted)
                for n, (text, payload) in enumerate(episode(event))
            ],
        )

    async def _put(self, collection: str, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        assert self.store is not None
        assert self.embedder is not None
        if not items:
            return
        vectors = await self.embedder.embed([text for _, text, _ in items])
        await self.store.upsert(
            collection,
            [
                Point(id=pid, vector=vector, payload={**payload, "text": text})
                for (pid, text, payload), vector in zip(items, vectors, strict=True)
            ],
        )
        self.written += len(items)


def build(store: VectorStore | None = None, embedder: Embedder | None = None) -> Service:
    service = Service(NAME, description="Writes restock episodes into the vector store.")
    writer = MemoryWriter(store, embedder)
    service.on_startup(writer.start)
    service.handles_batch(
        ProductUpserted,
        InventoryLow,
        RestockRecommended,
        RestockApproved,
        RestockRejected,
        StockReceived,
        InventoryReservationFailed,
        max_batch=128,
    )(writer.write)
    return service
