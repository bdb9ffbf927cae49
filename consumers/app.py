"""The shop: its catalog, services and state views, as one application.

Its demo and eval suite live in `evals/`, which imports the shop; they register
under the shop's name (entry points `agentbus.demos` and `agentbus.evals`).
"""

from __future__ import annotations

from agentbus.agent import read_suggestions
from agentbus.app import Application, StateView
from agents import restock, substitute
from agents.registry import restock_agent, substitute_agent
from consumers import (
    api,
    inventory,
    memory,
    notifications,
    orders,
    payments,
    purchasing,
    review,
    shipping,
)
from events import CATALOG

app = Application(
    name="shop",
    catalog=CATALOG,
    services={
        "inventory": inventory.build,
        "orders": orders.build,
        "payments": payments.build,
        "notifications": notifications.build,
        "shipping": shipping.build,
        "purchasing": purchasing.build,
        "memory": memory.build,
        restock.NAME: restock_agent,
        substitute.NAME: substitute_agent,
        review.NAME: review.build,
        api.NAME: api.build,
    },
    states={
        "inventory": StateView(
            "inventory", inventory.read_state, "{sku: {on_hand, reserved, available}}"
        ),
        "orders": StateView("orders", orders.read_state, "{order_id: {status, reason}}"),
        "shipping": StateView("shipping", shipping.read_state, "{order_id: {status, shipment_id}}"),
    },
    suggestions=(
        StateView(restock.NAME, read_suggestions, "restock suggestions"),
        StateView(substitute.NAME, read_suggestions, "substitute suggestions"),
    ),
)
