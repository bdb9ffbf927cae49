"""An application over the test catalog, for CLI tests (`AGENTBUS_APP=tests.contract.app`)."""

from __future__ import annotations

from typing import Any

from agentbus.app import Application
from agentbus.envelope import Event
from agentbus.errors import PermanentError
from agentbus.service import Context, Service
from tests.contract.catalog import CATALOG


def echo() -> Service:
    """Handles order.created; refuses keys that start with 'bad'."""
    service = Service("echo", publishes=("inventory.low",))

    @service.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        if event.data.key.startswith("bad"):
            raise PermanentError(f"key {event.data.key!r} is refused", code="refused")

    return service


app = Application(name="test", catalog=CATALOG, services={"echo": echo})
