"""Recorded model answers: record live once, replay offline for ever.

A cassette is a JSON Lines file, one recorded answer per line. A request's key is
the sha256 of its normalized form: the messages with volatile substrings (UUIDs,
RFC 3339 timestamps, ISO dates, long hex ids) replaced by numbered placeholders,
the output model's name and JSON schema, and the temperature. The same situation
on another day, with other ids and times, finds its recording.

Placeholders are numbered by first appearance (`<uuid-1>`, `<uuid-2>`, ...), so
two prompts differ when the *pattern* of ids differs. Each line keeps which value
every placeholder stood for; on a hit, ids and times in the recorded output are
rewritten to the values standing at the same places in the current request, so a
replayed answer cites the ids of this run, not those of the recording.

`replay` is strict: a miss raises `CassetteMiss` and never calls a live model. An
answer that stayed malformed after its retry is recorded as such and replayed as
`MalformedOutput`, so the agent falls back where it fell back when recorded. Outages
(unavailable, timed out) are not the model's answer and are never recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from agentbus.errors import ConfigurationError
from agentbus.llm.base import (
    CassetteMiss,
    MalformedOutput,
    Model,
    ModelRequest,
    ModelResponse,
    Usage,
)

MALFORMED = "MalformedOutput"
"""A recorded line whose model answered malformed twice: replayed as that error."""

_VOLATILE = re.compile(
    "|".join(
        f"(?P<{kind}>{pattern})"
        for kind, pattern in (
            ("uuid", r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b"),
            (
                "time",
                r"\b\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                r"(?:[Zz]|[+-]\d{2}:?\d{2}\b)?",
            ),
            ("date", r"\b\d{4}-\d{2}-\d{2}\b"),
            ("hex", r"\b[0-9a-fA-F]{16,}\b"),
        )
    )
)


def normalize(texts: list[str]) -> tuple[list[str], dict[str, str]]:
    """Replace volatile substrings by numbered placeholders, numbering across all
    `texts` in order of first appearance. Returns the texts and what each
    placeholder stands for."""
    placeholders: dict[str, str] = {}  # value -> placeholder
    counts: dict[str, int] = {}

    def replace(match: re.Match[str]) -> str:
        value = match.group(0)
        placeholder = placeholders.get(value)
        if placeholder is None:
            kind = match.lastgroup or "value"
            counts[kind] = counts.get(kind, 0) + 1
            placeholder = placeholders[value] = f"<{kind}-{counts[kind]}>"
        return placeholder

    normalized = [_VOLATILE.sub(replace, text) for text in texts]
    return normalized, {placeholder: value for value, placeholder in placeholders.items()}


def normalized_request(request: ModelRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The request in the form that is hashed, and the placeholders' values."""
    contents, values = normalize([m.content for m in request.messages])
    normalized = {
        "messages": [
            {"role": m.role, "content": content}
            for m, content in zip(request.messages, contents, strict=True)
        ],
        "output": request.output.__name__,
        "schema": request.output.model_json_schema(),
        "temperature": request.temperature,
    }
    return normalized, values


def request_key(request: ModelRequest) -> str:
    """The sha256 (hex) of the normalized request."""
    return _digest(normalized_request(request)[0])


def _digest(normalized: dict[str, Any]) -> str:
    canonical = json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CassetteModel:
    """Records (`record`: a miss calls `inner` and appends the answer) or replays
    (`replay`: strict, a miss raises `CassetteMiss`) model answers at `path`.

    Lines recorded before are loaded on open, so a recorded request is never asked
    again. Appends are safe across tasks and threads of one process. Replaying a
    cassette that does not exist is a `ConfigurationError`.
    """

    def __init__(
        self,
        path: Path,
        *,
        inner: Model | None = None,
        mode: Literal["record", "replay"],
    ) -> None:
        if mode not in ("record", "replay"):
            raise ConfigurationError(f"cassette mode {mode!r}: use 'record' or 'replay'")
        if mode == "record" and inner is None:
            raise ConfigurationError("recording a cassette needs a live model (inner)")
        self.path = Path(path)
        self.inner = inner
        self.mode = mode
        self._lock = _lock_for(self.path)
        self._entries = self._load()
        names = {str(e.get("name") or e["model"]) for e in self._entries.values()}
        if inner is not None:
            self.name, self.provider = inner.name, inner.provider
        else:
            self.name = names.pop() if len(names) == 1 else f"cassette:{self.path.name}"
            self.provider = "cassette"

    def __len__(self) -> int:
        return len(self._entries)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        normalized, values = normalized_request(request)
        key = _digest(normalized)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.get("error") == MALFORMED:
                raise MalformedOutput(str(entry.get("message") or "recorded as malformed"))
            return _replayed(entry, request, values)
        if self.mode == "replay" or self.inner is None:
            raise CassetteMiss(
                f"no recorded answer for {request.output.__name__} request {key[:12]} "
                f"in {self.path}"
            )
        try:
            response = await self.inner.complete(request)
        except MalformedOutput as exc:
            # An answer the model got wrong twice is its answer too: a replay must fall
            # back where the recording did, and for the same reason, or every later
            # prompt that shows the earlier suggestion differs and misses.
            await asyncio.to_thread(
                self._append,
                {
                    "key": key,
                    "request": normalized,
                    "values": values,
                    "error": MALFORMED,
                    "message": str(exc),
                    "name": self.inner.name,
                    "model": self.inner.name,
                    "provider": self.inner.provider,
                },
            )
            raise
        entry = {
            "key": key,
            "request": normalized,
            "values": values,
            "output": response.output.model_dump(mode="json"),
            "name": self.inner.name,
            "model": response.model,
            "provider": response.provider,
            "usage": {
                "input_tokens": response.usage.input_tokens,
                "output_tokens": response.usage.output_tokens,
            },
            "finish_reason": response.finish_reason,
            "attempts": response.attempts,
            "seconds": response.seconds,
        }
        await asyncio.to_thread(self._append, entry)
        return response

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with self._lock:
            if entry["key"] in self._entries:
                return  # a concurrent request of this model recorded it first
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
            self._entries[entry["key"]] = entry

    def _load(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        if self.mode == "replay" and not self.path.exists():
            raise ConfigurationError(f"no cassette at {self.path}")
        if not self.path.exists():
            return entries
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # a last line cut short by a crash mid-write
                raise ConfigurationError(f"{self.path}:{number}: not a JSON line") from None
            entries[entry["key"]] = entry
        return entries


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file in this process: several models (one per agent, per replay) may
    record to the same cassette, and a long line goes out in more than one write."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(path.resolve(), threading.Lock())


def _replayed(
    entry: dict[str, Any], request: ModelRequest, values: dict[str, str]
) -> ModelResponse:
    recorded: dict[str, str] = entry.get("values") or {}
    renames = {
        old: values[placeholder]
        for placeholder, old in recorded.items()
        if placeholder in values and values[placeholder] != old
    }
    output = _rename(entry["output"], renames) if renames else entry["output"]
    try:
        parsed = request.output.model_validate(output)
    except ValidationError as exc:
        raise MalformedOutput(
            f"the recorded answer no longer fits {request.output.__name__}: "
            f"{exc.error_count()} errors; record the cassette again"
        ) from None
    usage = entry["usage"]
    return ModelResponse(
        output=parsed,
        model=entry["model"],
        provider=entry["provider"],
        usage=Usage(*usage) if isinstance(usage, list) else Usage(**usage),
        finish_reason=entry.get("finish_reason"),
        attempts=int(entry.get("attempts", 1)),
        seconds=entry.get("seconds"),
    )


def _rename(data: Any, renames: dict[str, str]) -> Any:
    """Rewrite recorded ids and times inside every string of `data`."""
    if isinstance(data, str):
        return _VOLATILE.sub(lambda m: renames.get(m.group(0), m.group(0)), data)
    if isinstance(data, list):
        return [_rename(item, renames) for item in data]
    if isinstance(data, dict):
        return {key: _rename(value, renames) for key, value in data.items()}
    return data
