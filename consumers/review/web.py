"""The review console's pages and actions: server-rendered HTML, live over SSE.

Every page needs a session (else a redirect to sign-in), every action a session
(else 401) and the session's CSRF token (else 403). A decision is one
transaction: the suggestion leaves `pending` only if it still was, the decision
event goes to the outbox, the audit log gets a row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentbus.envelope import Event, EventCodec
from agentbus.store import Database
from agentbus.telemetry import extract_context, inject_headers, tracer
from consumers.review import deciding, readmodel
from consumers.review.auth import AuthConfig, csrf_matches, new_csrf_token
from consumers.review.deciding import DecisionInvalid
from consumers.review.throttle import SignInThrottle

HERE = Path(__file__).parent
SESSION_HOURS = 8


class Changes:
    """Tells open pages that the read model changed."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[str | None]] = set()

    def notify(self) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait("changed")

    def close(self) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @contextlib.contextmanager
    def listen(self) -> Any:
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)


@dataclass
class Console:
    """What the pages need from the running service."""

    database: Callable[[], Database]
    wake_relay: Callable[[], None]
    codec: EventCodec
    auth: AuthConfig
    reviewing: deciding.Reviewing
    changes: Changes = field(default_factory=Changes)
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    # Tests park a decision here to make two reviewers collide; None in service.
    before_decision: Callable[[], Awaitable[None]] | None = None


class SecurityHeaders:
    """Headers every response gets: no framing, no sniffing, scripts only from here."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    return environment


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return _when(datetime.fromisoformat(value))
    return "" if value is None else str(value)


def build_app(console: Console) -> Starlette:
    templates = _templates()

    def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        session = request.session
        if "csrf" not in session:
            session["csrf"] = new_csrf_token()
        page = templates.get_template(name).render(
            user=session.get("user"), csrf=session["csrf"], path=request.url.path, **values
        )
        return HTMLResponse(page, status_code=status)

    def signed_in(request: Request) -> str | None:
        user = request.session.get("user")
        until = request.session.get("until", 0)
        if not isinstance(user, str) or datetime.now(UTC).timestamp() > float(until):
            return None
        return user

    def page(
        handler: Callable[[Request, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            user = signed_in(request)
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            return await handler(request, user)

        return guarded

    def action(
        handler: Callable[[Request, str, Any], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            user = signed_in(request)
            if user is None:
                return Response("sign in first", status_code=401, media_type="text/plain")
            form = await request.form()
            if not csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
                await _audit(console, user, "csrf_refused", request.url.path)
                return Response(
                    "invalid or missing CSRF token", status_code=403, media_type="text/plain"
                )
            return await handler(request, user, form)

        return guarded

    async def login_form(request: Request) -> Response:
        return render(request, "login.html", next=_safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
            return Response(
                "invalid or missing CSRF token", status_code=403, media_type="text/plain"
            )
        name = str(form.get("user", "")).strip()[:200]
        password = str(form.get("password", ""))
        target = _safe_next(str(form.get("next", "")))
        # The client as the socket shows it: a forwarded header is the client's to forge.
        address = request.client.host if request.client else "?"
        wait = console.throttle.retry_after(name, address)
        if wait is not None:
            await _audit(console, name or "?", "sign_in_throttled")
            page = render(
                request,
                "login.html",
                429,
                error="Too many failed sign-ins: try again later.",
                next=target,
            )
            page.headers["Retry-After"] = str(wait)
            return page
        user = await asyncio.to_thread(console.auth.check, name, password)
        if user is None:
            console.throttle.failed(name, address)
            await _audit(console, name or "?", "sign_in_failed")
            return render(request, "login.html", 401, error="Wrong name or password.", next=target)
        console.throttle.succeeded(name)
        upgraded = await asyncio.to_thread(console.auth.upgrade, user, password)
        if upgraded is not None:
            replaces, new_hash = upgraded
            await console.database().run(
                lambda tx: readmodel.store_password_upgrade(tx.connection, user, replaces, new_hash)
            )
        request.session.clear()  # a fresh session (and CSRF token) on sign-in
        request.session.update(
            user=user,
            until=datetime.now(UTC).timestamp() + SESSION_HOURS * 3600,
            csrf=new_csrf_token(),
        )
        await _audit(console, user, "signed_in")
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request, user: str, form: Any) -> Response:
        request.session.clear()
        await _audit(console, user, "signed_out")
        return RedirectResponse("/login", status_code=303)

    def filters_of(request: Request) -> readmodel.Filters:
        query = request.query_params
        status = query.get("status", "pending")
        return readmodel.Filters(
            status=status if status in ("pending", "approved", "rejected", "") else "pending",
            agent=query.get("agent", "")[:200],
            kind=query.get("kind", "") if query.get("kind") in ("restock", "substitute") else "",
            urgency=query.get("urgency", "")
            if query.get("urgency") in ("low", "medium", "high")
            else "",
            sku=query.get("sku", "")[:100],
        )

    async def listing(request: Request, user: str) -> Response:
        filters = filters_of(request)

        def read(connection: sa.Connection) -> tuple[list[dict[str, Any]], list[str]]:
            return readmodel.listing(connection, filters), readmodel.agents(connection)

        rows, agents = await console.database().read(read)
        return render(request, "index.html", rows=rows, agents=agents, filters=filters)

    async def fragment(request: Request, user: str) -> Response:
        filters = filters_of(request)
        rows = await console.database().read(lambda c: readmodel.listing(c, filters))
        return render(request, "_rows.html", rows=rows, filters=filters)

    async def detail(request: Request, user: str) -> Response:
        suggestion_id = request.path_params["suggestion_id"]
        found = await console.database().read(lambda c: _detail(c, suggestion_id))
        if found is None:
            return render(request, "missing.html", 404, suggestion_id=suggestion_id)
        return render(request, "suggestion.html", **found, notice=request.query_params.get("done"))

    async def decide(request: Request, user: str, form: Any) -> Response:
        suggestion_id = request.path_params["suggestion_id"]
        verb = request.path_params["verb"]
        row = await console.database().read(lambda c: readmodel.one(c, suggestion_id))
        if row is None:
            return render(request, "missing.html", 404, suggestion_id=suggestion_id)
        try:
            data = _decision(console.reviewing, row, verb, user, form)
        except DecisionInvalid as exc:
            found = await console.database().read(lambda c: _detail(c, suggestion_id))
            return render(request, "suggestion.html", 422, **(found or {}), error=str(exc))
        if console.before_decision is not None:
            await console.before_decision()
        event = _decision_event(console.codec, row, data)
        approved = verb == "approve"
        won = await console.database().run(
            lambda tx: deciding.commit(tx, row, event, user, approved=approved)
        )
        if not won:
            found = await console.database().read(lambda c: _detail(c, suggestion_id))
            return render(
                request,
                "suggestion.html",
                409,
                **(found or {}),
                error="Someone decided this suggestion first; nothing was changed.",
            )
        console.wake_relay()
        console.changes.notify()
        return RedirectResponse(
            f"/suggestions/{quote(suggestion_id)}?done={verb}d", status_code=303
        )

    async def history(request: Request, user: str) -> Response:
        rows = await console.database().read(readmodel.history)
        return render(request, "history.html", rows=rows)

    async def audit(request: Request, user: str) -> Response:
        rows = await console.database().read(readmodel.audit_log)
        return render(request, "audit.html", rows=rows)

    async def stream(request: Request, user: str) -> Response:
        async def events() -> AsyncIterator[str]:
            with console.changes.listen() as queue:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        change = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": still here\n\n"
                        continue
                    if change is None:
                        return
                    yield f"event: {change}\ndata: {change}\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", action(logout), methods=["POST"]),
        Route("/", page(listing)),
        Route("/fragments/suggestions", page(fragment)),
        Route("/stream", page(stream)),
        Route("/history", page(history)),
        Route("/audit", page(audit)),
        Route("/suggestions/{suggestion_id}", page(detail)),
        Route("/suggestions/{suggestion_id}/{verb:str}", action(decide), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=console.auth.secret,
                session_cookie="review_session",
                max_age=SESSION_HOURS * 3600,
                same_site="strict",
                https_only=console.auth.secure_cookies,
            ),
        ],
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never a redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parsed = urlparse(target)
    return target if not parsed.scheme and not parsed.netloc else "/"


def _decision(
    reviewing: deciding.Reviewing, row: dict[str, Any], verb: str, user: str, form: Any
) -> BaseModel:
    if verb == "approve":
        changes = {
            name: str(form.get(name, "")).strip()
            for name in reviewing.changeable(row)
            if str(form.get(name, "")).strip()
        }
        note = str(form.get("note", "")).strip() or None
        return reviewing.decide(row, verb, user, text=note, changes=changes, as_text=True)
    return reviewing.decide(row, verb, user, text=str(form.get("reason", "")).strip())


def _decision_event(codec: EventCodec, row: dict[str, Any], data: BaseModel) -> Event[Any]:
    """The decision, caused by the suggestion, in the suggestion's trace."""
    event = deciding.decision_event(codec, row, data, service="review")
    parent = extract_context({}, event_traceparent(row))
    with tracer().start_as_current_span(
        f"review {event.type}", context=parent, kind=SpanKind.SERVER
    ):
        carrier: dict[str, Any] = {}
        inject_headers(carrier)
        traceparent = carrier.get("traceparent")
        if trace.get_current_span().get_span_context().is_valid and isinstance(traceparent, str):
            event = event.model_copy(update={"traceparent": traceparent})
    return event


def event_traceparent(row: dict[str, Any]) -> str | None:
    found = row.get("traceparent")
    return found if isinstance(found, str) else None


def _detail(connection: sa.Connection, suggestion_id: str) -> dict[str, Any] | None:
    row = readmodel.one(connection, suggestion_id)
    if row is None:
        return None
    data = row["data"]
    evidence_ids = [str(i) for i in data.get("evidence", [])][:200]
    known = readmodel.events_by_id(connection, [row["trigger_event_id"], *evidence_ids])
    trigger = known.get(row["trigger_event_id"])
    timeline: list[dict[str, Any]] = []
    if trigger is not None and trigger["causation_id"]:
        cause = readmodel.events_by_id(connection, [trigger["causation_id"]]).get(
            trigger["causation_id"]
        )
        if cause is not None:
            timeline.append(
                {"what": cause["type"], "when": cause["time"], "detail": cause["summary"]}
            )
    if trigger is not None:
        timeline.append(
            {"what": trigger["type"], "when": trigger["time"], "detail": trigger["summary"]}
        )
    timeline.append(
        {
            "what": f"suggested by {row['agent']}",
            "when": row["created_at"],
            "detail": f"model {data.get('model', '?')}",
        }
    )
    if row["status"] != "pending":
        timeline.append(
            {
                "what": f"{row['status']} by {row['decided_by']}",
                "when": row["decided_at"],
                "detail": row["decision_note"] or "",
            }
        )
        if row["decision_event_id"]:
            purchase = readmodel.caused_by(
                connection, row["decision_event_id"], "purchase_order.created"
            )
            if purchase is not None:
                timeline.append(
                    {
                        "what": "purchase order",
                        "when": purchase["time"],
                        "detail": purchase["summary"],
                    }
                )
    evidence = [{"id": i, **known.get(i, {})} for i in evidence_ids]
    return {
        "s": row,
        "data": data,
        "timeline": timeline,
        "evidence": evidence,
        "past": readmodel.decided_on_sku(connection, row["sku"], row["suggestion_id"]),
    }


async def _audit(console: Console, actor: str, action: str, target: str | None = None) -> None:
    await console.database().run(lambda tx: readmodel.log(tx.connection, actor, action, target))
