"""Read-only tools of the substitute agent, over its own projection."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tools.projections.substitute import products, shortages, stock


def missing_item(connection: sa.Connection, order_id: str) -> dict[str, Any] | None:
    """The product the order could not get (the largest shortfall), with its catalog entry."""
    row = connection.execute(
        sa.select(
            shortages.c.sku,
            shortages.c.requested,
            shortages.c.available,
            products.c.name,
            products.c.description,
            products.c.category,
            products.c.unit_price,
        )
        .join(products, products.c.sku == shortages.c.sku)
        .where(shortages.c.order_id == order_id)
        .order_by((shortages.c.requested - shortages.c.available).desc(), shortages.c.sku)
    ).first()
    return None if row is None else dict(row._mapping)


def in_stock(
    connection: sa.Connection, category: str, but: str, limit: int = 200
) -> list[dict[str, Any]]:
    """Products of `category` with stock available now, other than `but`."""
    rows = connection.execute(
        sa.select(
            products.c.sku,
            products.c.name,
            products.c.category,
            products.c.unit_price,
            stock.c.available,
        )
        .join(stock, stock.c.sku == products.c.sku)
        .where(products.c.category == category, products.c.sku != but, stock.c.available > 0)
        .order_by(products.c.sku)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]
