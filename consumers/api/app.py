"""The HTTP API (CONTRACT.md, "HTTP API"): writes become events through the outbox,
reads answer from the projections, decisions go by the agents' declarations."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi

from agentbus.metrics import meter_provider
from agentbus.telemetry import tracer_provider
from consumers.api import document, operations, orders, stock, suggestions
from consumers.api.context import ApiContext
from consumers.api.guards import Guards
from consumers.api.problems import ProblemError, install

__all__ = ["ApiContext", "build_app"]


def build_app(api: ApiContext) -> FastAPI:
    app = FastAPI(
        dependencies=[Depends(_known_query_only)],
        # FastAPI's own OpenTelemetry: a SERVER span per request, child of the client's
        # traceparent, and the HTTP request metrics. Events a handler emits carry that
        # span as their traceparent, so the request and what it caused are one trace.
        # No spans per dependency, and no logs of validation failures (they quote
        # what clients sent: customers' notes).
        telemetry={
            "tracer_provider": tracer_provider(),
            "meter_provider": meter_provider(),
            "operation_spans": False,
            "logs": False,
        },
        title="agentbus shop API",
        version="1",
        description="Orders, catalog, stock and decisions on agents' suggestions. "
        "Writes become events; reads answer from projections of the events.",
    )
    install(app)
    for module in (orders, stock, suggestions, operations):
        app.include_router(module.router(api))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document.documented(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Guards, tokens=api.tokens)
    return app


async def _known_query_only(request: Request) -> None:
    """A query parameter the route does not take is a mistake to say, not to ignore."""
    known: set[str] = set()
    pending = [getattr(request.scope.get("route"), "dependant", None)]
    while pending:
        dependant = pending.pop()
        if dependant is not None:
            known.update(param.alias for param in dependant.query_params)
            pending.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(repr(name[:50]) for name in unknown[:5])
        raise ProblemError(422, f"unknown query parameter {names}")
