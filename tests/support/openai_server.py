"""A local OpenAI-compatible server for tests: the real openai client talks HTTP to it.

Each call takes the next scripted behaviour (an answer, malformed text, an HTTP
status, a delay); with none left, a default responder answers. It counts calls
and completed answers, in-process or as its own process:

    python -m tests.support.openai_server --port 0 --responder tests.support.responders:restock
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Responder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Behaviour:
    content: dict[str, Any] | str | None = None  # a dict is sent as JSON content
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0


@dataclass
class FakeOpenAI:
    responder: Responder | None = None
    script: deque[Behaviour] = field(default_factory=deque)
    calls: list[dict[str, Any]] = field(default_factory=list)
    call_times: list[float] = field(default_factory=list)
    completed: int = 0
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> FakeOpenAI:
        self.script.extend(behaviours)
        return self

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        self.call_times.append(time.monotonic())
        behaviour = self.script.popleft() if self.script else Behaviour()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.status != 200:
            headers = {}
            if behaviour.retry_after is not None:
                headers["retry-after"] = str(behaviour.retry_after)
            return JSONResponse(
                {"error": {"message": "scripted failure", "type": "server_error"}},
                status_code=behaviour.status,
                headers=headers,
            )
        content = behaviour.content
        if content is None:
            if self.responder is None:
                return JSONResponse({"error": {"message": "no script"}}, status_code=500)
            content = self.responder(body)
        text = content if isinstance(content, str) else json.dumps(content)
        self.completed += 1
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body.get('model', 'fake')}-2026-01-01",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt + len(text) // 4,
                },
            }
        )

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = int(body.get("dimensions") or 8)
        data = []
        for n, text in enumerate(inputs):
            digest = hashlib.sha256(str(text).encode()).digest()
            vector = [(digest[i % len(digest)] - 128) / 128 for i in range(dim)]
            data.append({"object": "embedding", "index": n, "embedding": vector})
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake"),
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"calls": len(self.calls), "completed": self.completed})

    async def __aenter__(self) -> FakeOpenAI:
        self.port = self.port or free_port()
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--responder", required=True, help="module:function")
    args = parser.parse_args()
    module, _, name = args.responder.partition(":")
    responder = getattr(importlib.import_module(module), name)
    server = FakeOpenAI(responder=responder, port=args.port or free_port())

    async def serve() -> None:
        async with server:
            print(f"ready {server.port}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
