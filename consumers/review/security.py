"""What stands between the web and the console: headers, sessions, CSRF, redirects.

Every page needs a session (else a redirect to sign-in), every action a session
(else 401) and the session's CSRF token (else 403, and an audit row).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlparse

from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.review.auth import AuthConfig, csrf_matches, new_csrf_token

SESSION_SECONDS = 8 * 3600

Page = Callable[[Request, str], Awaitable[Response]]
Action = Callable[[Request, str, FormData], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Response]]
Audit = Callable[[str, str, str | None], Awaitable[None]]


class _SecurityHeaders:
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


def middleware(auth: AuthConfig) -> list[Middleware]:
    """The headers outermost, so error pages get them too; sessions in strict cookies."""
    return [
        Middleware(_SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=auth.secret,
            session_cookie="review_session",
            max_age=SESSION_SECONDS,
            same_site="strict",
            https_only=auth.secure_cookies,
        ),
    ]


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's token, drawn on its first page so the sign-in form has one too."""
    if "csrf" not in session:
        session["csrf"] = new_csrf_token()
    return str(session["csrf"])


def csrf_refused(request: Request, form: FormData) -> Response | None:
    """A 403 unless the form carries the session's token."""
    if csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
        return None
    return Response("invalid or missing CSRF token", status_code=403, media_type="text/plain")


def start_session(request: Request, user: str) -> None:
    # A fresh session, and so a fresh CSRF token: nothing chosen before sign-in survives.
    request.session.clear()
    request.session.update(
        user=user,
        until=datetime.now(UTC).timestamp() + SESSION_SECONDS,
        csrf=new_csrf_token(),
    )


def _signed_in(request: Request) -> str | None:
    user = request.session.get("user")
    until = request.session.get("until", 0)
    if not isinstance(user, str) or datetime.now(UTC).timestamp() > float(until):
        return None
    return user


def safe_next(target: str | None) -> str:
    """Only a path on this site: never a redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parsed = urlparse(target)
    return target if not parsed.scheme and not parsed.netloc else "/"


def page(handler: Page) -> Handler:
    """A page for the signed-in; others go to sign-in and come back here after."""

    async def guarded(request: Request) -> Response:
        user = _signed_in(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return await handler(request, user)

    return guarded


def action(handler: Action, audit: Audit) -> Handler:
    """A form post by the signed-in, with their session's CSRF token; a refusal is audited."""

    async def guarded(request: Request) -> Response:
        user = _signed_in(request)
        if user is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        form = await request.form()
        refused = csrf_refused(request, form)
        if refused is not None:
            await audit(user, "csrf_refused", request.url.path)
            return refused
        return await handler(request, user, form)

    return guarded
