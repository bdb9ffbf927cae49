"""Simulated people and partners around the shop, for the demo and simulations.

They are services like any other, so the loop closes over the same bus:
a reviewer who approves or rejects suggestions, a supplier who delivers purchase
orders after the lead time. They keep what they know in memory: they are actors
of a simulation, not parts of the product.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from agentbus.envelope import Event
from agentbus.service import Context, Service
from events import (
    ProductUpserted,
    PurchaseOrderCreated,
    RestockApproved,
    RestockRecommended,
    RestockRejected,
    StockReceived,
)

REVIEWER = "sim-reviewer"
SUPPLIER = "sim-supplier"


def reviewer(*, shelf_factor: float = 1.5, name: str = "sim-reviewer") -> Service:
    """Approves what fits the shelf (trimmed to max stock), rejects what does not."""
    service = Service(REVIEWER, publishes=("restock.approved", "restock.rejected"))
    max_stock: dict[str, int] = {}

    @service.handles(ProductUpserted)
    async def product(event: Event[ProductUpserted], ctx: Context) -> None:
        max_stock[event.data.sku] = event.data.max_stock

    @service.handles(RestockRecommended)
    async def review(event: Event[RestockRecommended], ctx: Context) -> None:
        data = event.data
        shelf = max_stock.get(data.sku, data.quantity)
        if data.quantity > shelf * shelf_factor:
            ctx.emit(
                RestockRejected(
                    recommendation_id=data.recommendation_id,
                    sku=data.sku,
                    reviewer=name,
                    reason=f"{data.quantity} is more than the shelf holds ({shelf})",
                ),
                cause=event,
            )
            return
        quantity = min(data.quantity, shelf)
        ctx.emit(
            RestockApproved(
                recommendation_id=data.recommendation_id,
                sku=data.sku,
                quantity=quantity,
                reviewer=name,
                note="approved" if quantity == data.quantity else f"trimmed to {quantity}",
            ),
            cause=event,
        )

    return service


def supplier(*, seconds_per_day: float = 0.02) -> Service:
    """Delivers each purchase order in full after the product's lead time."""
    service = Service(SUPPLIER, publishes=("stock.received",), concurrency=32)
    lead_time: dict[str, int] = {}

    @service.handles(ProductUpserted)
    async def product(event: Event[ProductUpserted], ctx: Context) -> None:
        lead_time[event.data.sku] = event.data.lead_time_days

    @service.handles(PurchaseOrderCreated)
    async def deliver(event: Event[PurchaseOrderCreated], ctx: Context) -> None:
        data = event.data
        days = lead_time.get(data.sku, 3)
        await asyncio.sleep(days * seconds_per_day)
        ctx.emit(
            StockReceived(
                sku=data.sku, quantity=data.quantity, purchase_order_id=data.purchase_order_id
            ),
            cause=event,
            time=event.time + timedelta(days=days),
        )

    return service
