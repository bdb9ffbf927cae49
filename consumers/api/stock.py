"""The catalog and the stock: products put, goods received, a SKU's stock read."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentbus.store import Transaction
from consumers.api import projections, schemas
from consumers.api.context import ApiContext, IdempotencyKey, SkuPath
from consumers.api.idempotency import Answer, emit
from consumers.api.problems import ProblemError, documented
from consumers.api.writes import Writing, write
from events import ProductUpserted, StockReceived


def router(api: ApiContext) -> APIRouter:
    routes = APIRouter()

    @routes.put(
        "/products/{sku}",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 409, 422),
        tags=["catalog"],
    )
    async def put_product(
        request: Request, sku: SkuPath, product: schemas.ProductRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Add or change a product; emits `product.upserted`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            event = writing.event(ProductUpserted(sku=sku, **product.model_dump()))
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(api, request, key, product, work)

    @routes.post(
        "/stock/receipts",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 409, 422),
        tags=["stock"],
    )
    async def receive_stock(
        request: Request, receipt: schemas.ReceiptRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Record goods received; emits `stock.received`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            event = writing.event(StockReceived(**receipt.model_dump()))
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(api, request, key, receipt, work)

    @routes.get(
        "/inventory/{sku}",
        response_model=schemas.InventoryView,
        responses=documented(401, 404, 422),
        tags=["stock"],
    )
    async def get_inventory(sku: SkuPath) -> schemas.InventoryView:
        """A SKU's stock as the events tell it."""
        found = await api.database().read(lambda c: projections.inventory(c, sku))
        if found is None:
            raise ProblemError(404, f"no product or stock known for {sku!r}")
        on_hand, reserved = found["on_hand"], found["reserved"]
        return schemas.InventoryView(
            sku=sku, on_hand=on_hand, reserved=reserved, available=on_hand - reserved
        )

    return routes
