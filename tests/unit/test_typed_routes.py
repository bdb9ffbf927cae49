"""Handlers registered by event class: routed under the class's type string."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import BaseModel

from agentbus.envelope import Event
from agentbus.service import Context, Service
from agentbus.store import StoreBinding, Transaction
from events import OrderCancelled, OrderCreated


def test_a_class_routes_under_its_event_type() -> None:
    service = Service("typed")

    @service.handles(OrderCreated, OrderCancelled)
    async def handle(event: Event[OrderCreated | OrderCancelled], ctx: Context) -> None:
        return None

    assert service.subscribes == ("order.created", "order.cancelled")
    assert service.routes["order.cancelled"].handler is handle


def test_appliers_of_classes_share_the_binding_s_batched_route() -> None:
    service = Service("typed")
    store = StoreBinding(service)

    @store.applies(OrderCreated)
    def created(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
        return None

    @store.applies_batch(OrderCancelled)
    def cancelled(tx: Transaction, events: Sequence[Event[OrderCancelled]], ctx: Context) -> None:
        return None

    assert service.subscribes == ("order.created", "order.cancelled")
    assert all(route.batch for route in service.routes.values())


def test_a_class_without_an_event_type_is_refused_when_registered() -> None:
    class Loose(BaseModel):
        value: int

    service = Service("typed")
    with pytest.raises(TypeError, match="Loose declares no `event_type`"):
        service.handles(Loose)
    assert service.routes == {}


def test_type_strings_still_route_what_declarations_name() -> None:
    service = Service("typed")

    @service.handles("order.created")
    async def handle(event: Event[OrderCreated], ctx: Context) -> None:
        return None

    assert service.subscribes == ("order.created",)
