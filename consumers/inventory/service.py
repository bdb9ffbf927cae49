"""The inventory service: catalog, stock, reservations and low-stock signals.

Each batch of events is applied as a unit: load the rows the batch touches
(stock rows locked in SKU order), apply the events in delivery order to an
in-memory `Inventory`, then save what changed and stage the emitted events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.service import Context, Service
from agentbus.store import StoreBinding, Transaction
from consumers.inventory.domain import Inventory, Level, LowStock, Product, Reservation
from consumers.inventory.tables import MIGRATIONS, products, reservation_lines, reservations, stock
from events import (
    EventData,
    InventoryAdjusted,
    InventoryLow,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    InventoryReturned,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderRejected,
    PaymentRefunded,
    ProductUpserted,
    StockReceived,
)

NAME = "inventory"
Handled = (
    ProductUpserted
    | StockReceived
    | InventoryAdjusted
    | OrderCreated
    | OrderCancelled
    | OrderConfirmed
    | OrderRejected
    | PaymentRefunded
)


def build() -> Service:
    service = Service(
        NAME,
        rebuildable=True,
        description="Stock per SKU, all-or-nothing reservations, low-stock signals.",
        # Reservations read stock of several SKUs: apply in the queue's order, in
        # batches, so that outcomes follow the order events were published in.
        max_concurrency=1,
        # And a transient failure holds the queue rather than letting later events
        # overtake it: the state then follows the queue's order exactly, which is
        # the order a recording of the exchange holds too (`agentbus rebuild`).
        retries_in_place=True,
        # Room for the next batch to arrive while one is in its transaction; batches fill
        # to 512 only under a backlog (a quiet queue hands over what it has).
        prefetch=1024,
        publishes=(
            "inventory.reserved",
            "inventory.reservation_failed",
            "inventory.released",
            "inventory.low",
            "inventory.returned",
        ),
    )
    store = StoreBinding(service, MIGRATIONS, max_batch=512)
    store.applies_batch(
        ProductUpserted,
        StockReceived,
        InventoryAdjusted,
        OrderCreated,
        OrderCancelled,
        OrderConfirmed,
        OrderRejected,
        PaymentRefunded,
    )(apply_batch)
    return service


def apply_batch(tx: Transaction, events: Sequence[Event[Handled]], ctx: Context) -> None:
    inventory = load(tx, events)
    for event in events:
        apply(inventory, event, ctx)
    save(tx, inventory)


D = TypeVar("D", bound=EventData)


class Step(Protocol[D]):
    """What an event of class `D` does to the batch's inventory."""

    def __call__(self, inventory: Inventory, event: Event[D], ctx: Context, /) -> None: ...


Touches = Callable[[D, set[str], set[str]], None]

# Each event type's step, and what it touches (added to the SKUs and the orders a batch
# loads), by type string: one dict lookup an event, where a chain of isinstance tests
# (pydantic's are slow to miss) would cost more than the comparisons they replace.
_STEPS: dict[str, Step[Any]] = {}
_TOUCHES: dict[str, Touches[Any]] = {}


def step(kind: type[D], touches: Touches[D]) -> Callable[[Step[D]], Step[D]]:
    """Make `apply` the step of `kind`'s events; mypy checks that it takes `Event[kind]`
    and that `touches` takes a `kind`."""

    def register(apply: Step[D]) -> Step[D]:
        _STEPS[kind.event_type] = apply
        _TOUCHES[kind.event_type] = touches
        return apply

    return register


def _a_sku(
    data: ProductUpserted | StockReceived | InventoryAdjusted, skus: set[str], _: set[str]
) -> None:
    skus.add(data.sku)


def _an_order(
    data: OrderCancelled | OrderConfirmed | OrderRejected | PaymentRefunded,
    _: set[str],
    orders: set[str],
) -> None:
    orders.add(data.order_id)


def _an_order_and_its_skus(data: OrderCreated, skus: set[str], orders: set[str]) -> None:
    orders.add(data.order_id)
    skus.update(line.sku for line in data.lines)


def apply(inventory: Inventory, event: Event[Handled], ctx: Context) -> None:
    _STEPS[event.type](inventory, event, ctx)


@step(ProductUpserted, _a_sku)
def _product_upserted(inventory: Inventory, event: Event[ProductUpserted], ctx: Context) -> None:
    data = event.data
    inventory.upsert_product(
        Product(
            sku=data.sku,
            name=data.name,
            category=data.category,
            supplier=data.supplier,
            reorder_point=data.reorder_point,
            max_stock=data.max_stock,
            lead_time_days=data.lead_time_days,
        )
    )


@step(StockReceived, _a_sku)
def _stock_received(inventory: Inventory, event: Event[StockReceived], ctx: Context) -> None:
    low = inventory.change_on_hand(event.data.sku, event.data.quantity)
    signal(ctx, event, [low] if low else [])


@step(InventoryAdjusted, _a_sku)
def _adjusted(inventory: Inventory, event: Event[InventoryAdjusted], ctx: Context) -> None:
    low = inventory.change_on_hand(event.data.sku, event.data.delta)
    signal(ctx, event, [low] if low else [])


@step(OrderCreated, _an_order_and_its_skus)
def _order_created(inventory: Inventory, event: Event[OrderCreated], ctx: Context) -> None:
    data = event.data
    outcome = inventory.reserve(data.order_id, [(x.sku, x.quantity) for x in data.lines])
    if outcome is None:
        return  # rejected before it arrived, or a second order under the same id
    wanted, short, lows = outcome
    if short:
        ctx.emit(
            InventoryReservationFailed(
                order_id=data.order_id,
                shortages=[
                    {"sku": s.sku, "requested": s.requested, "available": s.available}
                    for s in short
                ],
            ),
            cause=event,
        )
        return
    ctx.emit(
        InventoryReserved(
            order_id=data.order_id,
            lines=[{"sku": sku, "quantity": q} for sku, q in wanted.items()],
        ),
        cause=event,
    )
    signal(ctx, event, lows)


@step(OrderCancelled, _an_order)
def _order_cancelled(inventory: Inventory, event: Event[OrderCancelled], ctx: Context) -> None:
    # Cancelling a placed order is the orders service's call (payment may have won the
    # race); a cancellation seen before its order is final here too, in this queue's
    # order, so the stock is never held for it.
    inventory.refuse_if_unseen(event.data.order_id)


@step(OrderConfirmed, _an_order)
def _order_confirmed(inventory: Inventory, event: Event[OrderConfirmed], ctx: Context) -> None:
    inventory.commit(event.data.order_id)


@step(OrderRejected, _an_order)
def _order_rejected(inventory: Inventory, event: Event[OrderRejected], ctx: Context) -> None:
    released = inventory.release(event.data.order_id)
    if released is not None:
        ctx.emit(
            InventoryReleased(
                order_id=event.data.order_id,
                lines=[{"sku": sku, "quantity": q} for sku, q in released.items()],
            ),
            cause=event,
        )


@step(PaymentRefunded, _an_order)
def _payment_refunded(inventory: Inventory, event: Event[PaymentRefunded], ctx: Context) -> None:
    # Shipping stopped the shipment: the committed goods go back on the shelf.
    returned = inventory.take_back(event.data.order_id)
    if returned is not None:
        ctx.emit(
            InventoryReturned(
                order_id=event.data.order_id,
                lines=[{"sku": sku, "quantity": q} for sku, q in returned.items()],
            ),
            cause=event,
        )


def signal(ctx: Context, cause: Event[Any], lows: list[LowStock]) -> None:
    for low in lows:
        ctx.emit(
            InventoryLow(
                sku=low.sku,
                available=low.level.available,
                on_hand=low.level.on_hand,
                reserved=low.level.reserved,
                reorder_point=low.product.reorder_point,
                max_stock=low.product.max_stock,
                lead_time_days=low.product.lead_time_days,
            ),
            cause=cause,
        )


def _skus_and_orders(events: Sequence[Event[Handled]]) -> tuple[set[str], set[str]]:
    skus: set[str] = set()
    orders: set[str] = set()
    for event in events:
        _TOUCHES[event.type](event.data, skus, orders)
    return skus, orders


def load(tx: Transaction, events: Sequence[Event[Handled]]) -> Inventory:
    skus, order_ids = _skus_and_orders(events)
    inventory = Inventory()
    connection = tx.connection
    if order_ids:
        found = tx.rows(_RESERVATION_COLUMNS, reservations.c.order_id, sorted(order_ids))
        for order_id, status in found:
            inventory.reservations[order_id] = Reservation(order_id, status)
        # A committed order's lines are wanted when its goods come back.
        held = [o for o, r in inventory.reservations.items() if r.status in ("held", "committed")]
        for order_id, sku, quantity in tx.rows(_LINE_COLUMNS, reservation_lines.c.order_id, held):
            inventory.reservations[order_id].lines[sku] = quantity
            skus.add(sku)
    if not skus:
        return inventory
    ordered = sorted(skus)
    levels = inventory.levels
    # Rows as tuples, in the order selected: a batch reads hundreds.
    for sku, on_hand, reserved in _stock_rows(tx, ordered):
        levels[sku] = Level(on_hand, reserved)
    missing = [sku for sku in ordered if sku not in levels]
    if missing:
        # New SKUs get their row now, so that they are locked like the rest.
        connection.execute(
            tx.once(_new_stock, _new_stock),
            [{"sku": sku, "on_hand": 0, "reserved": 0} for sku in missing],
        )
        for sku, on_hand, reserved in _stock_rows(tx, missing):
            levels[sku] = Level(on_hand, reserved)
    for fields in _product_rows(tx, ordered):
        inventory.products[fields[0]] = Product(*fields)
    return inventory


_PRODUCT_COLUMNS = [products.c[f.name] for f in dataclasses.fields(Product)]
_LEVEL_COLUMNS = [stock.c.sku, stock.c.on_hand, stock.c.reserved]
_RESERVATION_COLUMNS = [reservations.c.order_id, reservations.c.status]
_LINE_COLUMNS = [
    reservation_lines.c.order_id,
    reservation_lines.c.sku,
    reservation_lines.c.quantity,
]


def _stock_rows(tx: Transaction, skus: list[str]) -> list[tuple[Any, ...]]:
    return tx.rows(_LEVEL_COLUMNS, stock.c.sku, skus, lock=True)


def _product_rows(tx: Transaction, skus: list[str]) -> list[tuple[Any, ...]]:
    # Columns in the order of Product's fields, so that a row is its arguments.
    return tx.rows(_PRODUCT_COLUMNS, products.c.sku, skus)


def _new_stock(tx: Transaction) -> Any:
    return tx.insert(stock).on_conflict_do_nothing(index_elements=[stock.c.sku])


def _upsert_products(tx: Transaction) -> Any:
    insert = tx.insert(products)
    return insert.on_conflict_do_update(
        index_elements=[products.c.sku],
        set_={c.name: insert.excluded[c.name] for c in products.columns if c.name != "sku"},
    )


def _upsert_reservations(tx: Transaction) -> Any:
    insert = tx.insert(reservations)
    return insert.on_conflict_do_update(
        index_elements=[reservations.c.order_id], set_={"status": insert.excluded.status}
    )


def _new_lines(tx: Transaction) -> Any:
    return tx.insert(reservation_lines).on_conflict_do_nothing()


def save(tx: Transaction, inventory: Inventory) -> None:
    connection = tx.connection
    if inventory.changed_products:
        rows = [_product_row(inventory.products[sku]) for sku in sorted(inventory.changed_products)]
        connection.execute(tx.once(_upsert_products, _upsert_products), rows)
    if inventory.changed_levels:
        levels = inventory.levels
        tx.update(
            stock.c.sku,
            [stock.c.on_hand, stock.c.reserved],
            [
                (sku, levels[sku].on_hand, levels[sku].reserved)
                for sku in sorted(inventory.changed_levels)
            ],
        )
    if inventory.changed_reservations:
        rows = [
            {"order_id": o, "status": inventory.reservations[o].status}
            for o in sorted(inventory.changed_reservations)
        ]
        connection.execute(tx.once(_upsert_reservations, _upsert_reservations), rows)
        lines = [
            {"order_id": o, "sku": sku, "quantity": q}
            for o in sorted(inventory.changed_reservations)
            # Whatever the status: a reservation made and settled within one batch
            # keeps its lines as one settled over two does (a rebuild compares them).
            for sku, q in inventory.reservations[o].lines.items()
        ]
        if lines:
            connection.execute(tx.once(_new_lines, _new_lines), lines)


def _product_row(product: Product) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "supplier": product.supplier,
        "reorder_point": product.reorder_point,
        "max_stock": product.max_stock,
        "lead_time_days": product.lead_time_days,
    }


def read_state(connection: sa.Connection) -> dict[str, dict[str, int]]:
    """`agentbus state inventory`: {sku: {on_hand, reserved, available}} for every known SKU."""
    known = sa.union(sa.select(products.c.sku), sa.select(stock.c.sku)).subquery()
    rows = connection.execute(
        sa.select(known.c.sku, stock.c.on_hand, stock.c.reserved)
        .select_from(known.outerjoin(stock, stock.c.sku == known.c.sku))
        .order_by(known.c.sku)
    )
    state: dict[str, dict[str, int]] = {}
    for row in rows:
        on_hand = row.on_hand or 0
        reserved = row.reserved or 0
        state[row.sku] = {"on_hand": on_hand, "reserved": reserved, "available": on_hand - reserved}
    return state
