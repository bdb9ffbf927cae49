"""A local OpenAI-compatible server for tests: the real openai client talks HTTP to it.

In-process, as an async context manager::

    async with FakeOpenAI([reply({"quantity": 3}), fail(429, retry_after=0.2)]) as server:
        model = OpenAIModel("gpt-test", base_url=server.base_url, api_key="test")
        ...
    server.calls        # the JSON bodies of the chat completion requests received

Each chat completion takes the next behaviour of `server.script` (an answer,
malformed text, a refusal, an HTTP status, a delay); with the script empty, the
`responder(request_json) -> dict` gives the answer's content. The default
responder builds the smallest answer that fits the request's JSON schema.

As its own process, for agents that run in processes of their own::

    python -m tests.support.openai_server --port 8765 --responder tests.support.x:answer

prints `ready` on stdout once listening and serves until SIGINT or SIGTERM.
`GET /stats` returns `{"calls": n, "completed": m, "embeddings": k}` (completed:
chat completions answered 200 to a client still waiting). `POST /v1/embeddings`
returns deterministic unit vectors from a hash of each input (`dimensions`, else 8).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib
import inspect
import json
import math
import re
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, replace
from typing import Any

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Responder = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]

SNAPSHOT = "2024-07-18"
"""Answers name a dated snapshot of the requested model, as OpenAI does."""
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Behaviour:
    """What the server does for one chat completion request."""

    content: dict[str, Any] | str | None = None
    """A dict is sent as JSON text, a str verbatim; None asks the responder."""
    status: int = 200
    retry_after: float | None = None
    """Seconds for the `retry-after` header of a non-200 answer."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    refusal: str | None = None
    finish_reason: str = "stop"
    message: str | None = None
    """The error message of a non-200 answer."""


def reply(content: dict[str, Any] | BaseModel) -> Behaviour:
    """Answer with `content` as the JSON text of the message."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return Behaviour(content=content)


def malformed(text: str = "Sure! I would order twelve units.") -> Behaviour:
    """Answer with text that is not the JSON asked for."""
    return Behaviour(content=text)


def refuse(text: str = "I'm sorry, I can't help with that.") -> Behaviour:
    """Answer with a refusal and no content."""
    return Behaviour(refusal=text)


def fail(status: int, *, retry_after: float | None = None, message: str | None = None) -> Behaviour:
    """Answer with an HTTP error status (429 and 5xx are retried by the client)."""
    return Behaviour(status=status, retry_after=retry_after, message=message)


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait `seconds`, then behave as `then` (default: the responder answers)."""
    return replace(then or Behaviour(), delay=seconds)


class FakeOpenAI:
    """An OpenAI-compatible HTTP server on 127.0.0.1, a free port unless `port` is given."""

    def __init__(
        self,
        script: Iterable[Behaviour] = (),
        *,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script: deque[Behaviour] = deque(script)
        self.responder: Responder = responder or schema_responder
        self.host = host
        self.port = port
        self.calls: list[dict[str, Any]] = []
        self.call_times: list[float] = []
        """`time.monotonic()` at each chat completion request's arrival."""
        self.completed = 0
        self.responses: list[dict[str, Any]] = []
        """The bodies of the chat completions answered 200."""
        self.embedding_calls: list[dict[str, Any]] = []
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> FakeOpenAI:
        """Add behaviours to the end of the script."""
        self.script.extend(behaviours)
        return self

    def stats(self) -> dict[str, int]:
        return {
            "calls": len(self.calls),
            "completed": self.completed,
            "embeddings": len(self.embedding_calls),
        }

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._closing = asyncio.Event()
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"the fake OpenAI server did not start on port {self.port}")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._closing.set()  # delayed answers stop waiting
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        self.calls.append(body)
        self.call_times.append(time.monotonic())
        behaviour = self.script.popleft() if self.script else Behaviour()
        if behaviour.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), behaviour.delay)
            if self._closing.is_set():
                return _error(503, "The server is shutting down.")
        if behaviour.status != 200:
            headers = {}
            if behaviour.retry_after is not None:
                headers["retry-after"] = f"{behaviour.retry_after:g}"
            return _error(behaviour.status, behaviour.message, headers)
        text: str | None = None
        if behaviour.refusal is None:
            content = behaviour.content
            if content is None:
                answer = self.responder(body)
                content = await answer if inspect.isawaitable(answer) else answer
            text = content if isinstance(content, str) else json.dumps(content)
        if not await request.is_disconnected():
            self.completed += 1
        prompt = _prompt_tokens(body)
        completion = _tokens(text or behaviour.refusal or "")
        answer_json = {
            "id": f"chatcmpl-fake{len(self.calls):08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _snapshot(str(body.get("model", "gpt-fake"))),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": behaviour.refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": behaviour.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake000001",
        }
        self.responses.append(answer_json)
        return JSONResponse(answer_json)

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.embedding_calls.append(body)
        raw = body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        dim = int(body.get("dimensions") or 8)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector = embedding(item if isinstance(item, str) else json.dumps(item), dim)
            encoded: list[float] | str = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_tokens(str(item)) for item in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model", "text-embedding-fake")),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        models = sorted({str(call.get("model")) for call in self.calls} or {"gpt-fake"})
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models
                ],
            }
        )

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())


class _Server(uvicorn.Server):
    """Leaves signal handling to whoever runs the loop (pytest, or `main`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def embedding(text: str, dim: int = 8) -> list[float]:
    """A deterministic unit vector of `dim` components derived from `text`."""
    values: list[float] = []
    block = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    vector = values[:dim]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def schema_responder(body: dict[str, Any]) -> dict[str, Any]:
    """The default responder: the smallest answer that fits the request's JSON schema."""
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        return {"answer": "ok"}
    example = example_of(schema, schema)
    return example if isinstance(example, dict) else {"answer": example}


def example_of(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A small value that satisfies `schema` (refs resolved against `root`)."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return example_of(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for union in ("anyOf", "oneOf"):
        if union in schema:
            variants = [v for v in schema[union] if v.get("type") != "null"] or schema[union]
            return example_of(variants[0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        item = schema.get("items") or {}
        return [example_of(item, root) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        formats = {
            "date-time": "2026-01-01T00:00:00Z",
            "date": "2026-01-01",
            "time": "00:00:00",
            "uuid": "00000000-0000-4000-8000-000000000000",
            "email": "someone@example.com",
        }
        text = formats.get(str(schema.get("format")), "example")
        return text.ljust(int(schema.get("minLength", 0)), "x")
    if kind in ("integer", "number"):
        value: float = 0
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + (1 if kind == "integer" else 0.5))
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        if "exclusiveMaximum" in schema:
            value = min(value, schema["exclusiveMaximum"] - (1 if kind == "integer" else 0.5))
        return math.ceil(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def _error(status: int, message: str | None, headers: dict[str, str] | None = None) -> Response:
    kinds = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        429: ("requests", "rate_limit_exceeded"),
    }
    kind, code = kinds.get(status, ("server_error", None))
    return JSONResponse(
        {
            "error": {
                "message": message or f"Scripted failure with status {status}.",
                "type": kind,
                "param": None,
                "code": code,
            }
        },
        status_code=status,
        headers=headers,
    )


def _snapshot(model: str) -> str:
    return model if _DATED.search(model) else f"{model}-{SNAPSHOT}"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    """Roughly what OpenAI counts: the text, a few tokens per message, the schema."""
    messages = body.get("messages") or []
    total = 3 + sum(4 + _tokens(str(m.get("content") or "")) for m in messages)
    if body.get("response_format"):
        total += _tokens(json.dumps(body["response_format"]))
    return total


def _load(spec: str) -> Responder:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--responder {spec!r}: expected MODULE:FUNCTION")
    responder: Responder = getattr(importlib.import_module(module), name)
    return responder


async def _serve(server: FakeOpenAI) -> None:
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--responder", help="MODULE:FUNCTION answering request_json -> dict (default: from schema)"
    )
    args = parser.parse_args(argv)
    responder = _load(args.responder) if args.responder else None
    asyncio.run(_serve(FakeOpenAI(responder=responder, host=args.host, port=args.port)))


if __name__ == "__main__":
    main()
