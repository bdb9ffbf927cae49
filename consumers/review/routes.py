"""The console's URLs: server-rendered HTML, live over SSE.

Handlers here only map requests to the other modules and their outcomes to pages:
`security` guards them, `views` renders, `deciding` decides, `live` streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentbus.envelope import EventCodec
from agentbus.store import Database
from consumers.review import deciding, readmodel, security, views
from consumers.review.auth import AuthConfig
from consumers.review.deciding import DecisionInvalid
from consumers.review.live import Changes, stream
from consumers.review.throttle import SignInThrottle


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

    async def audit(self, actor: str, action: str, target: str | None = None) -> None:
        await self.database().run(lambda tx: readmodel.log(tx.connection, actor, action, target))


def build_app(console: Console) -> Starlette:
    pages = views.Views()
    # The list filters by the kinds of suggestion the agents declare, no other.
    kinds = tuple(readmodel.kind_of(t) for t in console.reviewing.suggestion_types)

    def action(handler: security.Action) -> security.Handler:
        return security.action(handler, console.audit)

    def missing(request: Request, suggestion_id: str) -> Response:
        return pages.render(request, "missing.html", 404, suggestion_id=suggestion_id)

    async def suggestion(
        request: Request, suggestion_id: str, status: int = 200, **shown: Any
    ) -> Response:
        found = await console.database().read(lambda c: views.suggestion(c, suggestion_id))
        if found is None:
            return missing(request, suggestion_id)
        return pages.render(request, "suggestion.html", status, **found, **shown)

    async def login_form(request: Request) -> Response:
        target = security.safe_next(request.query_params.get("next"))
        return pages.render(request, "login.html", next=target)

    async def login(request: Request) -> Response:
        form = await request.form()
        refused = security.csrf_refused(request, form)
        if refused is not None:
            return refused
        name = str(form.get("user", "")).strip()[:200]
        password = str(form.get("password", ""))
        target = security.safe_next(str(form.get("next", "")))
        # The client as the socket shows it: a forwarded header is the client's to forge.
        address = request.client.host if request.client else "?"
        wait = console.throttle.retry_after(name, address)
        if wait is not None:
            await console.audit(name or "?", "sign_in_throttled")
            error = "Too many failed sign-ins: try again later."
            page = pages.render(request, "login.html", 429, error=error, next=target)
            page.headers["Retry-After"] = str(wait)
            return page
        user = await asyncio.to_thread(console.auth.check, name, password)
        if user is None:
            console.throttle.failed(name, address)
            await console.audit(name or "?", "sign_in_failed")
            error = "Wrong name or password."
            return pages.render(request, "login.html", 401, error=error, next=target)
        console.throttle.succeeded(name)
        upgraded = await asyncio.to_thread(console.auth.upgrade, user, password)
        if upgraded is not None:
            replaces, new_hash = upgraded
            await console.database().run(
                lambda tx: readmodel.store_password_upgrade(tx.connection, user, replaces, new_hash)
            )
        security.start_session(request, user)
        await console.audit(user, "signed_in")
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request, user: str, form: FormData) -> Response:
        request.session.clear()
        await console.audit(user, "signed_out")
        return RedirectResponse("/login", status_code=303)

    async def listing(request: Request, user: str) -> Response:
        filters = views.filters_of(request, kinds)

        def read(connection: sa.Connection) -> tuple[list[dict[str, Any]], list[str]]:
            return readmodel.listing(connection, filters), readmodel.agents(connection)

        rows, agents = await console.database().read(read)
        return pages.render(
            request,
            "index.html",
            rows=rows,
            agents=agents,
            filters=filters,
            kinds=[(kind, kind.capitalize()) for kind in kinds],
        )

    async def fragment(request: Request, user: str) -> Response:
        filters = views.filters_of(request, kinds)
        rows = await console.database().read(lambda c: readmodel.listing(c, filters))
        return pages.render(request, "_rows.html", rows=rows, filters=filters)

    async def detail(request: Request, user: str) -> Response:
        notice = request.query_params.get("done")
        return await suggestion(request, request.path_params["suggestion_id"], notice=notice)

    async def decide(request: Request, user: str, form: FormData) -> Response:
        suggestion_id = request.path_params["suggestion_id"]
        verb = request.path_params["verb"]
        row = await console.database().read(lambda c: readmodel.one(c, suggestion_id))
        if row is None:
            return missing(request, suggestion_id)
        try:
            data = console.reviewing.from_form(row, verb, user, form)
        except DecisionInvalid as exc:
            return await suggestion(request, suggestion_id, 422, error=str(exc))
        if console.before_decision is not None:
            await console.before_decision()
        event = deciding.decision_event(console.codec, row, data, service=readmodel.NAME)
        event = deciding.in_suggestion_trace(event, row, service=readmodel.NAME)
        approved = verb == "approve"
        won = await console.database().run(
            lambda tx: deciding.commit(tx, row, event, user, approved=approved)
        )
        if not won:
            error = "Someone decided this suggestion first; nothing was changed."
            return await suggestion(request, suggestion_id, 409, error=error)
        console.wake_relay()
        console.changes.notify()
        return RedirectResponse(
            f"/suggestions/{quote(suggestion_id)}?done={verb}d", status_code=303
        )

    async def history(request: Request, user: str) -> Response:
        rows = await console.database().read(readmodel.history)
        return pages.render(request, "history.html", rows=rows)

    async def audit(request: Request, user: str) -> Response:
        rows = await console.database().read(readmodel.audit_log)
        return pages.render(request, "audit.html", rows=rows)

    async def changes(request: Request, user: str) -> Response:
        return stream(console.changes)

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", action(logout), methods=["POST"]),
        Route("/", security.page(listing)),
        Route("/fragments/suggestions", security.page(fragment)),
        Route("/stream", security.page(changes)),
        Route("/history", security.page(history)),
        Route("/audit", security.page(audit)),
        Route("/suggestions/{suggestion_id}", security.page(detail)),
        Route("/suggestions/{suggestion_id}/{verb:str}", action(decide), methods=["POST"]),
        Mount("/static", StaticFiles(directory=views.HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=security.middleware(console.auth))
