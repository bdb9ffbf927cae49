"""What every request passes before a route sees it: a token, and text a database takes.

The token is checked here rather than per route so that a path no route knows is
a 401 too, not a map of what exists. Bodies are read whole (up to a limit) and
refused when a string holds NUL or a lone surrogate: PostgreSQL stores neither,
and a write that fails at commit would be a 5xx.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.api.auth import Tokens
from consumers.api.problems import problem

PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
MAX_BODY = 1_048_576


class Guards:
    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") not in PUBLIC:
            authorization = _header(scope, b"authorization")
            client = self.tokens.client_of(authorization)
            if client is None:
                answer = problem(
                    401,
                    "a valid bearer token is needed (Authorization: Bearer <token>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await answer(scope, receive, send)
                return
            scope.setdefault("state", {})["client"] = client
        repeated = _repeated_query(scope)
        if repeated is not None:
            await problem(422, f"query parameter {repeated!r} may be given once only")(
                scope, receive, send
            )
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(body, message), send)
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await problem(413, f"a body may hold at most {MAX_BODY} bytes")(
                    scope, receive, send
                )
                return
            if not message.get("more_body", False):
                break
        refusal = _unstorable(body)
        if refusal is not None:
            await problem(422, refusal)(scope, receive, send)
            return
        await self.app(scope, _replay(body, None), send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _repeated_query(scope: Scope) -> str | None:
    """A query parameter given twice: every parameter here is one value, and taking
    the last of several would answer a question the client did not ask."""
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    seen: set[str] = set()
    for name, _ in parse_qsl(raw, keep_blank_values=True):
        if name in seen:
            return name[:100]
        seen.add(name)
    return None


def _replay(body: bytes, after: Message | None) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if after is not None:
            return after
        return {"type": "http.disconnect"}

    return receive


def _unstorable(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route's own validation says what is wrong
    for text in _strings(parsed):
        if "\x00" in text:
            return "text may not contain NUL characters"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "text may not contain unpaired surrogates"
    return None


def _strings(value: Any) -> Any:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
