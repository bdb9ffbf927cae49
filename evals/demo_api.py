"""The demo's HTTP client: orders placed through the API's front door, as a shop's web
front would place them, once the simulated days have settled.

One order is sent twice under one `Idempotency-Key`, as a client retrying after a
lost answer would: the API answers the same and the bus sees one `order.created`.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from consumers.api.auth import Tokens
from consumers.api.service import HttpApi

ORDERS = 3


class DemoApi:
    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self.api = HttpApi(Tokens.of([self.token]), port=0)

    async def place_orders(self, skus: list[str]) -> dict[str, Any]:
        """Orders for the first SKUs of the catalog, one of them sent twice; what came back."""
        base = f"http://127.0.0.1:{self.api.port}"
        headers = {"Authorization": f"Bearer {self.token}"}
        placed: list[dict[str, Any]] = []
        replayed = 0
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            for n, sku in enumerate(skus[:ORDERS]):
                body = {
                    "customer_id": f"web-{n}",
                    "lines": [{"sku": sku, "quantity": 1}],
                    "currency": "EUR",
                    "note": None,
                }
                key = {"Idempotency-Key": f"demo-web-order-{n}"}
                answer = await client.post("/orders", json=body, headers=key)
                answer.raise_for_status()
                placed.append(answer.json())
                if n == 0:  # a retry after a lost answer: the same order, not a second one
                    again = await client.post("/orders", json=body, headers=key)
                    again.raise_for_status()
                    replayed += again.json() == answer.json()
        return {"placed": placed, "replayed_identically": replayed}

    async def statuses(self, order_ids: list[str]) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.api.port}"
        headers = {"Authorization": f"Bearer {self.token}"}
        found: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            for order_id in order_ids:
                answer = await client.get(f"/orders/{order_id}")
                found[order_id] = answer.json().get("status", "?") if answer.is_success else "?"
        return found
