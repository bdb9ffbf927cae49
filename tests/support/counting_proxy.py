"""A pass-through in front of a real OpenAI-compatible server that counts, on the
server's side of the connection, the chat completions it delivered.

The real server answers every request; the proxy only forwards bytes and counts:
`calls` (requests received), `completed` (answered 200 to a client still waiting
for the answer) and the server's own `usage` of each delivered answer. llama.cpp
counts tokens (`/metrics`) but not answers delivered, which a test of a process
killed mid-answer needs.

`hold_when(predicate)` keeps the answers to requests whose body the predicate
picks at the proxy until `release()`: the server has answered, the client is
still waiting. A test that kills a client
"while the model answers" needs that moment to last; on loaded cores two answers
could otherwise land so close together that no call was ever seen in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.calls = 0
        self.completed = 0
        self.usages: list[dict[str, Any]] = []
        """The `usage` of each answer delivered, as the server reported it."""
        self.in_flight = 0
        self._hold: Callable[[bytes], bool] | None = None
        self._released = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def hold_when(self, predicate: Callable[[bytes], bool]) -> None:
        self._hold = predicate
        self._released.clear()

    def release(self) -> None:
        self._hold = None
        self._released.set()

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None
        body = await request.body()
        chat = request.url.path.endswith("/chat/completions")
        if chat:
            self.calls += 1
            self.in_flight += 1
        try:
            answer = await self._client.request(
                request.method,
                f"{self.upstream}{request.url.path.removeprefix('/v1')}",
                content=body,
                headers={"content-type": request.headers.get("content-type", "application/json")},
            )
            if chat and self._hold is not None and self._hold(body):
                await self._released.wait()
        finally:
            if chat:
                self.in_flight -= 1
        if chat and answer.status_code == 200 and not await request.is_disconnected():
            self.completed += 1
            self.usages.append(answer.json().get("usage") or {})
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def __aenter__(self) -> CountingProxy:
        self._client = httpx.AsyncClient(timeout=None)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/{path:path}", self._forward, methods=["GET", "POST"])])
        config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._client is not None:
            await self._client.aclose()


class _Server(uvicorn.Server):
    """Leaves signal handling to the test's loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
