"""The API as the real service on the in-process broker with SQLite, called in
process through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from agentbus.envelope import Event, new_event
from agentbus.service import Service
from consumers.api import HttpApi
from consumers.api.app import build_app
from consumers.api.auth import Tokens
from events import RestockRecommended, SubstituteSuggested
from tests.agents.harness import Shop

TOKEN = "api-token-for-tests-0123456789"
OTHER_TOKEN = "another-client-token-9876543210"


class ApiShop:
    def __init__(self, shop: Shop, api: HttpApi, app: FastAPI) -> None:
        self.shop = shop
        self.api = api
        self.app = app

    def client(self, token: str | None = TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://api", headers=headers
        )

    async def settle(self) -> None:
        await self.shop.host.settle(interval=0.02, stable=3, timeout=60)


@asynccontextmanager
async def api_shop(tmp_path: Path, others: Sequence[Service] = ()) -> AsyncIterator[ApiShop]:
    api = HttpApi(Tokens.of([TOKEN, OTHER_TOKEN]), port=0)
    async with Shop(tmp_path, [api.service, *others]) as shop:
        yield ApiShop(shop, api, build_app(api.context()))


def restock_suggestion(n: int, sku: str = "SKU-A") -> Event[Any]:
    return new_event(
        RestockRecommended(
            recommendation_id=f"rec-{n}",
            sku=sku,
            quantity=30,
            urgency="high",
            rationale="Cover the lead time.",
            evidence=[],
            confidence=0.8,
            agent="restock-agent",
            model="policy",
            prompt_version="restock/v1",
            trigger_event_id=f"low-{n}",
        ),
        source="/services/restock-agent",
        id=f"restock-suggestion-{n}",
    )


def substitute_suggestion(n: int) -> Event[Any]:
    return new_event(
        SubstituteSuggested(
            suggestion_id=f"sub-{n}",
            order_id=f"order-{n}",
            sku="SKU-A",
            substitutes=[
                {"sku": "SKU-B", "name": "Santoku", "score": 0.9, "available": 4},
                {"sku": "SKU-C", "name": "Paring knife", "score": 0.6, "available": 9},
            ],
            message="Try the santoku.",
            agent="substitute-agent",
            model="policy",
            trigger_event_id=f"rejected-{n}",
        ),
        source="/services/substitute-agent",
        id=f"substitute-suggestion-{n}",
    )
