"""The shop: its catalog, services, state views and demo, as one application."""

from __future__ import annotations

from agentbus.app import Application, StateView
from consumers import inventory, notifications, orders, payments
from consumers.demo import run_demo
from events import CATALOG

app = Application(
    name="shop",
    catalog=CATALOG,
    services={
        "inventory": inventory.build,
        "orders": orders.build,
        "payments": payments.build,
        "notifications": notifications.build,
    },
    states={
        "inventory": StateView(
            "inventory", inventory.read_state, "{sku: {on_hand, reserved, available}}"
        ),
        "orders": StateView("orders", orders.read_state, "{order_id: {status, reason}}"),
    },
    demo=run_demo,
)
