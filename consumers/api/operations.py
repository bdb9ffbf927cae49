"""What orchestrators and scrapers ask: /healthz, /readyz (open), /metrics (behind a token)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from consumers.api.context import ApiContext
from consumers.api.problems import ProblemError, documented


def router(api: ApiContext) -> APIRouter:
    routes = APIRouter(tags=["operations"])

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @routes.get("/readyz", responses=documented(503))
    async def readyz() -> Any:
        try:
            await asyncio.wait_for(api.ready(), 2.0)
        except Exception as exc:  # a probe reports any failure, never raises
            raise ProblemError(503, f"not ready: {type(exc).__name__}: {exc}"[:300]) from None
        return {"status": "ready"}

    @routes.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return routes
