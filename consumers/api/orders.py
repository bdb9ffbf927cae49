"""Orders: placed priced from the catalog, read from the events, cancelled."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentbus.envelope import derived_id
from agentbus.store import Transaction
from consumers.api import projections, schemas
from consumers.api.context import ApiContext, IdempotencyKey, OrderId
from consumers.api.idempotency import Answer, emit
from consumers.api.problems import ProblemError, documented
from consumers.api.tables import NAME
from consumers.api.writes import Writing, write
from events import OrderCancelled, OrderCreated
from events.types import MAX_MONEY


def router(api: ApiContext) -> APIRouter:
    routes = APIRouter(tags=["orders"])

    @routes.post(
        "/orders",
        status_code=202,
        response_model=schemas.OrderAccepted,
        responses=documented(400, 401, 409, 422),
    )
    async def place_order(
        request: Request, order: schemas.OrderRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Place an order, priced from the catalog; emits `order.created`."""
        skus = [line.sku for line in order.lines]
        if len(set(skus)) != len(skus):
            raise ProblemError(422, "each SKU may appear on one line only")

        def work(tx: Transaction, writing: Writing) -> Answer:
            prices = projections.prices(tx.connection, skus)
            unknown = [sku for sku in skus if sku not in prices]
            if unknown:
                raise ProblemError(422, f"not in the catalog: {', '.join(unknown[:20])}")
            total = sum((prices[line.sku] * line.quantity for line in order.lines), Decimal(0))
            if total > MAX_MONEY:
                raise ProblemError(422, f"the order's total exceeds {MAX_MONEY}")
            order_id = derived_id(NAME, writing.client, writing.key, "order")
            data = OrderCreated(
                order_id=order_id,
                customer_id=order.customer_id,
                lines=[
                    {"sku": line.sku, "quantity": line.quantity, "unit_price": prices[line.sku]}
                    for line in order.lines
                ],
                currency=order.currency,
                note=order.note,
            )
            emit(tx, writing.event(data))
            accepted = schemas.OrderAccepted(order_id=order_id, status="pending", total=total)
            return Answer(202, accepted.model_dump(mode="json"))

        return await write(api, request, key, order, work)

    @routes.get(
        "/orders/{order_id}",
        response_model=schemas.OrderView,
        responses=documented(401, 404, 422),
    )
    async def get_order(order_id: OrderId) -> schemas.OrderView:
        """An order as the events tell it."""
        found = await api.database().read(lambda c: projections.order(c, order_id))
        if found is None:
            raise ProblemError(404, f"no order {order_id!r}")
        return schemas.OrderView(
            order_id=found["order_id"],
            status=found["status"],
            reason=found["reason"],
            lines=found["lines"],
            total=float(Decimal(found["total"])),
            currency=found["currency"],
        )

    @routes.post(
        "/orders/{order_id}/cancel",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 404, 409, 422),
    )
    async def cancel_order(
        request: Request,
        order_id: OrderId,
        cancel: schemas.CancelRequest,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Ask for an order to be cancelled; emits `order.cancelled`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            found = projections.order(tx.connection, order_id)
            if found is None:
                raise ProblemError(404, f"no order {order_id!r}")
            event = writing.event(OrderCancelled(order_id=order_id, reason=cancel.reason))
            if found["correlation_id"]:
                # The cancellation belongs to the order's business flow.
                event = event.model_copy(update={"correlationid": found["correlation_id"]})
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(api, request, key, cancel, work)

    return routes
