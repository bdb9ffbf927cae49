"""One-off applications for CLI tests, configured by the environment."""

from __future__ import annotations

import os

from agentbus.app import Application, StateView
from agentbus.service import Service
from tests.contract import app as test_app


def _echo() -> Service:
    service = test_app.echo()
    service.queue = os.environ["TEST_ECHO_QUEUE"]
    return service


make_echo = Application(name="test", catalog=test_app.CATALOG, services={"echo": _echo})


def _inventory() -> Service:
    """The shop's real inventory service, on a queue of the test's own."""
    from consumers import inventory

    service = inventory.build()
    service.queue = os.environ["TEST_INVENTORY_QUEUE"]
    return service


def _make_inventory() -> Application:
    from consumers import inventory
    from events import CATALOG

    return Application(
        name="shop-inventory",
        catalog=CATALOG,
        services={"inventory": _inventory},
        states={"inventory": StateView("inventory", inventory.read_state)},
    )


make_inventory = _make_inventory()
