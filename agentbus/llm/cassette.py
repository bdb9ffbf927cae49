"""Recorded model answers: record live once, replay offline forever.

A request's key is a hash of its normalized form: ids, timestamps and long hex
strings in the prompts are replaced by placeholders, so a replay of the same
situation on another day finds its recording. Replay is strict: a miss is an
error, never a live call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from agentbus.errors import ConfigurationError
from agentbus.llm.base import (
    CassetteMiss,
    Model,
    ModelRequest,
    ModelResponse,
    Usage,
)

_VOLATILE = [
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b"),
        "<time>",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
]


def normalize(text: str) -> str:
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def request_key(request: ModelRequest) -> tuple[str, dict[str, Any]]:
    normalized = {
        "messages": [[m.role, normalize(m.content)] for m in request.messages],
        "output": request.output.__name__,
        "schema": request.output.model_json_schema(),
        "temperature": request.temperature,
    }
    digest = hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()
    return digest, normalized


class CassetteModel:
    def __init__(
        self, path: Path, *, inner: Model | None = None, mode: Literal["record", "replay"]
    ) -> None:
        if mode == "record" and inner is None:
            raise ConfigurationError("recording a cassette needs a live model")
        self.path = path
        self.inner = inner
        self.mode = mode
        self.name = inner.name if inner is not None else f"cassette:{path.name}"
        self.provider = inner.provider if inner is not None else "cassette"
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry

    async def complete(self, request: ModelRequest) -> ModelResponse:
        key, normalized = request_key(request)
        entry = self._entries.get(key)
        if entry is None:
            if self.mode == "replay" or self.inner is None:
                raise CassetteMiss(f"no recorded answer for request {key[:12]} in {self.path}")
            response = await self.inner.complete(request)
            entry = {
                "key": key,
                "request": normalized,
                "output": response.output.model_dump(mode="json"),
                "model": response.model,
                "provider": response.provider,
                "usage": [response.usage.input_tokens, response.usage.output_tokens],
                "finish_reason": response.finish_reason,
            }
            async with self._lock:
                self._entries[key] = entry
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, sort_keys=True) + "\n")
            return response
        return ModelResponse(
            output=request.output.model_validate(entry["output"]),
            model=entry["model"],
            provider=entry["provider"],
            usage=Usage(*entry["usage"]),
            finish_reason=entry["finish_reason"],
        )
