"""A seeded, deterministic simulated shop that produces catalog events.

The same seed gives the same events, ids included, so a run can be replayed and
compared. Ids are uuid5s of the seed and a counter; times advance on a
simulated clock starting at `start`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agentbus.envelope import Event, new_event
from events import (
    InventoryAdjusted,
    OrderCancelled,
    OrderCreated,
    ProductUpserted,
    StockReceived,
)

SOURCE_SHOP = "/simulator/shop"
SOURCE_WAREHOUSE = "/simulator/warehouse"

CATEGORIES = {
    "kitchen": ["Chef knife", "Cutting board", "Cast iron pan", "Espresso cups"],
    "garden": ["Pruning shears", "Watering can", "Seed tray", "Garden gloves"],
    "office": ["Desk lamp", "Notebook A5", "Fountain pen", "Monitor stand"],
}


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    unit_cost: Decimal
    unit_price: Decimal
    lead_time_days: int
    reorder_point: int
    max_stock: int
    supplier: str
    daily_demand: float


@dataclass
class ShopSimulation:
    """Parameters of one simulated stretch of trading."""

    seed: int = 7
    products: int = 8
    days: int = 14
    orders_per_day: int = 10
    cancel_rate: float = 0.05
    big_order_rate: float = 0.05  # orders above the payment limit
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 1, 8, tzinfo=UTC))

    def catalog(self) -> list[Product]:
        rng = random.Random(self.seed)
        names = [(cat, name) for cat, items in CATEGORIES.items() for name in items]
        rng.shuffle(names)
        products = []
        for n, (category, name) in enumerate(names[: self.products]):
            cost = Decimal(rng.randint(300, 9000)) / 100
            demand = rng.uniform(1.0, 6.0)
            lead = rng.choice([2, 3, 5, 7])
            reorder = int(demand * lead * 1.5) + 2
            products.append(
                Product(
                    sku=f"SKU-{n + 1:03d}",
                    name=name,
                    category=category,
                    unit_cost=cost,
                    unit_price=(cost * Decimal("1.8")).quantize(Decimal("0.01")),
                    lead_time_days=lead,
                    reorder_point=reorder,
                    max_stock=reorder * 6,
                    supplier=f"supplier-{category}",
                    daily_demand=demand,
                )
            )
        return products

    def events(self) -> Iterator[Event[Any]]:
        """Products, opening stock, then days of orders, cancellations and deliveries."""
        rng = random.Random(self.seed + 1)
        ids = SeededIds(f"agentbus-simulator/{self.seed}")
        now = self.start
        products = self.catalog()
        for product in products:
            yield self._event(
                ProductUpserted(
                    sku=product.sku,
                    name=product.name,
                    description=f"{product.name} from the {product.category} range.",
                    category=product.category,
                    unit_cost=product.unit_cost,
                    unit_price=product.unit_price,
                    lead_time_days=product.lead_time_days,
                    reorder_point=product.reorder_point,
                    max_stock=product.max_stock,
                    supplier=product.supplier,
                ),
                SOURCE_WAREHOUSE,
                ids,
                now,
            )
            now += timedelta(seconds=1)
            yield self._event(
                StockReceived(
                    sku=product.sku, quantity=product.max_stock // 2, purchase_order_id=None
                ),
                SOURCE_WAREHOUSE,
                ids,
                now,
            )
        order_number = 0
        open_orders: list[str] = []
        for day in range(self.days):
            day_start = self.start + timedelta(days=day, hours=1)
            for n in range(self.orders_per_day):
                now = day_start + timedelta(minutes=n * (600 // self.orders_per_day))
                order_number += 1
                order_id = f"ORD-{order_number:05d}"
                yield self._event(self._order(rng, products, order_id), SOURCE_SHOP, ids, now)
                open_orders.append(order_id)
                if rng.random() < self.cancel_rate and open_orders:
                    victim = open_orders.pop(rng.randrange(len(open_orders)))
                    yield self._event(
                        OrderCancelled(order_id=victim, reason="customer changed their mind"),
                        SOURCE_SHOP,
                        ids,
                        now + timedelta(seconds=30),
                    )
            # Deliveries every few days for some lines, and the odd stock count correction.
            if day % 3 == 2:
                for product in rng.sample(products, k=max(1, len(products) // 2)):
                    yield self._event(
                        StockReceived(
                            sku=product.sku, quantity=product.max_stock // 2, purchase_order_id=None
                        ),
                        SOURCE_WAREHOUSE,
                        ids,
                        day_start + timedelta(hours=11),
                    )
            if rng.random() < 0.2:
                product = rng.choice(products)
                yield self._event(
                    InventoryAdjusted(
                        sku=product.sku, delta=rng.choice([1, 2, 3]), reason="stock count"
                    ),
                    SOURCE_WAREHOUSE,
                    ids,
                    day_start + timedelta(hours=12),
                )

    def _order(self, rng: random.Random, products: list[Product], order_id: str) -> OrderCreated:
        if rng.random() < self.big_order_rate:
            # The three dearest products, just enough of each to pass the payment limit.
            dearest = sorted(products, key=lambda p: p.unit_price)[-3:]
            quantity = int(Decimal(5000) / sum(p.unit_price for p in dearest)) + 1
            lines = [
                {"sku": p.sku, "quantity": quantity, "unit_price": p.unit_price} for p in dearest
            ]
        else:
            lines = [
                {
                    "sku": p.sku,
                    "quantity": rng.choice([1, 1, 1, 2, 2, 3]),
                    "unit_price": p.unit_price,
                }
                for p in rng.sample(products, k=rng.choice([1, 1, 2, 3]))
            ]
        return OrderCreated(
            order_id=order_id,
            customer_id=f"CUST-{rng.randint(1, 60):03d}",
            lines=lines,
            currency="EUR",
            note=None,
        )

    @staticmethod
    def _event(data: Any, source: str, ids: SeededIds, at: datetime) -> Event[Any]:
        return new_event(data, source=source, id=ids.next(), time=at)


class SeededIds:
    """Event ids as uuid5s of a namespace and a counter: the same seed, the same ids."""

    def __init__(self, namespace: str) -> None:
        self._namespace = uuid.uuid5(uuid.NAMESPACE_URL, namespace)
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return str(uuid.uuid5(self._namespace, str(self._count)))
