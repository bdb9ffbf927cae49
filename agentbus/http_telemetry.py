"""Server spans and request metrics for an HTTP app served beside a service.

Each request gets a SERVER span, the child of a W3C `traceparent` the client sent,
named and labelled as the HTTP semantic conventions ask (`http.request.method`,
`http.route`, `http.response.status_code`). Events a handler emits take that
span's context as their `traceparent`, so the relay's publish spans, and every
consumer downstream, join the request's trace.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentbus.metrics import instruments
from agentbus.telemetry import extract_context, inject_headers, tracer

__all__ = ["TracedRequests", "current_traceparent"]


class TracedRequests:
    """ASGI middleware: one SERVER span and one duration point per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", [])
            if key in (b"traceparent", b"tracestate")
        }
        method = str(scope.get("method", "GET"))
        started = time.perf_counter()
        status = 500
        span = tracer().start_span(
            method,
            context=extract_context(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, observed)
        finally:
            # The route is known only once the router matched it; a path would make
            # an unbounded number of span names and metric series.
            route = _route_of(scope)
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "http.response.status_code": status,
            }
            if route is not None:
                attributes["http.route"] = route
                span.update_name(f"{method} {route}")
            span.set_attributes(attributes)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
            span.end()
            instruments().http_duration.record(time.perf_counter() - started, attributes)


def _route_of(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in progress (a request's), if it records one."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, Any] = {}
    inject_headers(carrier)
    found = carrier.get("traceparent")
    return found if isinstance(found, str) else None
