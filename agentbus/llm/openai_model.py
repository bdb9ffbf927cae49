"""Any OpenAI-compatible Chat Completions endpoint, with strict structured output.

Retries are layered on purpose. Transport failures (429, 5xx, 408, timeouts,
connection errors) are retried by the openai client itself, with exponential
backoff and jitter that honours `Retry-After`, up to `max_retries` times. An
answer that arrives but will not parse into the schema (not JSON, failing
validation, a refusal, a truncated answer) is asked for once more here, with the
reason fed back; a second bad answer raises `MalformedOutput`.

Structured output goes as `response_format` `json_schema` first. Servers that
refuse it (llama-cpp-python's answers HTTP 500, `Input should be 'text' or
'json_object'`) or ignore it (free text, or JSON of another shape) get
`json_object` with the schema in the prompt instead: decided once per process and
server, and logged once. Every call carries a token limit, so a model that loops
stops at it (and the answer, cut short, is malformed). Unless the request sets its
own, the limit is raised to the longest answer the schema allows, when its strings
and lists are bounded: a small model that fills each string to its bound gives a
valid answer, which a lower limit would cut.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from agentbus.errors import ConfigurationError
from agentbus.llm.answer_length import longest_answer
from agentbus.llm.base import (
    ChatMessage,
    MalformedOutput,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelUnavailable,
    Usage,
)
from agentbus.settings import ModelSettings

log = logging.getLogger(__name__)

DEFAULT_MODEL = ModelSettings().model
DEFAULT_MAX_TOKENS = ModelSettings().max_tokens
OPENAI_HOST = "api.openai.com"

Structured = Literal["json_schema", "json_object"]
# Per process: the servers (base URL and model) that refused or ignored `json_schema`.
_FALLEN_BACK: set[str] = set()
_FALLBACK_LOCK = threading.Lock()

# Statuses the client retries (see openai's `_should_retry`): after its retries they
# mean the service is unavailable; any other status is a request the service refused.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})
_SECRET = re.compile(r"\b(?:sk|rk|sess)-[A-Za-z0-9_*\-]{6,}|\bBearer\s+\S+", re.IGNORECASE)
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_ECHO_LIMIT = 4000
_FORMATS_KEPT = 256


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` in the form strict structured output accepts.

    Every object lists all its properties as required and forbids additional ones;
    `$ref`s are inlined (only recursive models keep `$defs`); `oneOf` becomes
    `anyOf`; defaults are dropped (a field with a default is still required: the
    model must give it). Free-form objects (`dict` fields) cannot be expressed and
    raise `ConfigurationError`. Constraints strict mode ignores are still checked
    by pydantic when the answer is parsed.
    """
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})
    kept: dict[str, Any] = {}

    def definition(ref: str) -> str:
        name = ref.removeprefix("#/$defs/")
        if name == ref or name not in definitions:
            raise ConfigurationError(f"{model.__name__}: cannot resolve {ref!r} in its schema")
        return name

    def convert(node: Any, expanding: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = definition(ref)
            if name in expanding:  # a recursive model: keep a reference to its definition
                if name not in kept:
                    kept[name] = {}
                    kept[name] = convert(definitions[name], (name,))
                return {"$ref": f"#/$defs/{name}"}
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return convert({**definitions[name], **siblings}, (*expanding, name))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("default", "discriminator"):
                continue
            if key == "properties":
                out[key] = {prop: convert(sub, expanding) for prop, sub in value.items()}
            elif key in ("items", "not", "contains", "additionalProperties") and isinstance(
                value, dict
            ):
                out[key] = convert(value, expanding)
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
                out["anyOf" if key == "oneOf" else key] = [convert(v, expanding) for v in value]
            else:
                out[key] = value
        all_of = out.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            del out["allOf"]
            out = {**all_of[0], **out}
        if out.get("type") == "object" or "properties" in out:
            if "properties" not in out and out.get("additionalProperties", True) is not False:
                raise ConfigurationError(
                    f"{model.__name__}: a free-form object (a dict field) cannot be expressed "
                    "in strict structured output; use a list of models instead"
                )
            properties = out.setdefault("properties", {})
            out["required"] = list(properties)
            out["additionalProperties"] = False
        return out

    result: dict[str, Any] = convert(schema, ())
    if result.get("type") != "object":
        raise ConfigurationError(f"{model.__name__}: structured output must be a JSON object")
    if kept:
        result["$defs"] = kept
    return result


def response_format(model: type[BaseModel]) -> ResponseFormatJSONSchema:
    """The `response_format` of a Chat Completions request for `model`."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _SCHEMA_NAME.sub("_", model.__name__)[:64],
            "schema": strict_json_schema(model),
            "strict": True,
        },
    }


class OpenAIModel:
    """A `Model` over an OpenAI-compatible Chat Completions endpoint.

    Without `client`, one is built from `base_url` and `api_key` (each falling back
    to `OPENAI_BASE_URL` and `OPENAI_API_KEY`), `timeout` (seconds per HTTP attempt)
    and `max_retries`. A given `client` is used as it is configured. `max_tokens`
    bounds every answer unless the request sets its own limit. `structured` fixes
    how structured output is asked for (by default it is found out, see above).
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        structured: Structured | None = None,
    ) -> None:
        self.name = model
        self.max_tokens = max_tokens
        self._structured = structured
        self._owns_client = client is None
        if client is not None:
            if base_url is not None or api_key is not None:
                raise ConfigurationError("OpenAIModel: pass either a client or base_url/api_key")
            self.client = client
        else:
            settings = ModelSettings.from_env()
            base_url = base_url or settings.base_url
            api_key = api_key or settings.api_key
            if api_key is None and base_url is not None:
                api_key = "unused"  # a local OpenAI-compatible server needs no key
            try:
                self.client = openai.AsyncOpenAI(
                    api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
                )
            except openai.OpenAIError:
                raise ConfigurationError(
                    "OpenAIModel needs an API key: pass api_key or set OPENAI_API_KEY"
                ) from None
        self._formats: dict[type[BaseModel], tuple[ResponseFormatJSONSchema, int | None]] = {}
        self._server = f"{self.client.base_url}#{model}"
        # OpenAI's own API knows only `max_completion_tokens` for some models; other
        # servers (llama-cpp-python, older vLLM) know only `max_tokens`: they get both.
        self._openai_itself = self.client.base_url.host == OPENAI_HOST

    async def aclose(self) -> None:
        """Close the HTTP client, if this model built it."""
        if self._owns_client:
            await self.client.close()

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r}, base_url={str(self.client.base_url)!r})"

    @property
    def structured(self) -> Structured:
        """How this model asks its server for structured output: as told when made, else
        `json_schema` until the server refuses or ignores it in this process."""
        if self._structured is not None:
            return self._structured
        return "json_object" if self._server in _FALLEN_BACK else "json_schema"

    def _fall_back(self, why: str) -> None:
        with _FALLBACK_LOCK:
            if self._server in _FALLEN_BACK:
                return
            _FALLEN_BACK.add(self._server)
        log.warning(
            "%s at %s %s: asking for json_object with the schema in the prompt from now on",
            self.name,
            self.client.base_url,
            why,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        messages = [_message(m) for m in request.messages]
        input_tokens = output_tokens = 0
        problem = ""
        started = time.perf_counter()
        for attempt in (1, 2):
            mode = self.structured
            completion = await self._create(messages, request, mode)
            if completion.usage is not None:
                input_tokens += completion.usage.prompt_tokens
                output_tokens += completion.usage.completion_tokens
            choice = completion.choices[0] if completion.choices else None
            content = choice.message.content if choice is not None else None
            if choice is None:
                problem = "no choices in the answer"
            elif choice.message.refusal:
                problem = "the model refused"
            elif not content:
                problem = f"an empty answer (finish_reason={choice.finish_reason})"
            else:
                try:
                    output = _parse(request.output, content)
                except ValueError as exc:
                    problem = _describe(exc, choice.finish_reason)
                    log.debug(
                        "%s: answer %d rejected (%s; %d tokens): %s",
                        self.name,
                        attempt,
                        problem,
                        completion.usage.completion_tokens if completion.usage else -1,
                        _excerpt(content),
                    )
                    if mode == "json_schema" and _schema_ignored(
                        request.output, content, choice.finish_reason
                    ):
                        self._fall_back(f"ignored the json_schema asked for ({problem})")
                    messages = [
                        *messages,
                        {"role": "assistant", "content": content[:_ECHO_LIMIT]},
                        {
                            "role": "user",
                            "content": f"That answer was rejected: {problem}. Reply again "
                            "with only a JSON object that matches the schema.",
                        },
                    ]
                    continue
                return ModelResponse(
                    output=output,
                    model=completion.model or self.name,
                    provider=self.provider,
                    usage=Usage(input_tokens, output_tokens),
                    finish_reason=choice.finish_reason,
                    attempts=attempt,
                    seconds=round(time.perf_counter() - started, 3),
                )
        raise MalformedOutput(
            f"{self.name}: no answer fit {request.output.__name__} in 2 requests ({problem})"
        )

    async def _create(
        self, messages: list[ChatCompletionMessageParam], request: ModelRequest, mode: Structured
    ) -> ChatCompletion:
        try:
            return await self._send(messages, request, mode)
        except openai.APIStatusError as exc:
            if mode == "json_object" or not _names_response_format(exc):
                raise self._error(exc) from None
            self._fall_back(f"refused json_schema (HTTP {exc.status_code})")
        try:
            return await self._send(messages, request, "json_object")
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    async def _send(
        self, messages: list[ChatCompletionMessageParam], request: ModelRequest, mode: Structured
    ) -> ChatCompletion:
        known = self._formats.get(request.output)
        if known is None:
            if len(self._formats) >= _FORMATS_KEPT:
                self._formats.clear()  # answer models made per request must not pile up
            made = response_format(request.output)
            known = self._formats[request.output] = (
                made,
                longest_answer(made["json_schema"].get("schema") or {}),
            )
        fmt, longest = known
        limit = request.max_output_tokens or self.max_tokens
        if limit is not None and not request.max_output_tokens and longest is not None:
            # A valid answer is never cut: the limit stops loops, the schema bounds.
            limit = max(limit, longest)
        extra: dict[str, Any] = {}
        if limit is not None and not self._openai_itself:
            extra["max_tokens"] = limit
        if mode == "json_object":
            schema = fmt["json_schema"].get("schema") or {}
            messages = schema_in_prompt(messages, schema)
            # The schema beside `json_object` too: llama.cpp and llama-cpp-python turn it
            # into grammar, which bounds what a small model writes; others ignore it.
            extra["response_format"] = {"type": "json_object", "schema": schema}
        try:
            return await self.client.chat.completions.create(
                model=self.name,
                messages=messages,
                response_format=fmt if mode == "json_schema" else openai.omit,
                temperature=request.temperature,
                max_completion_tokens=openai.omit if limit is None else limit,
                extra_body=extra or None,
            )
        except openai.APIStatusError:
            raise  # the caller decides: a refusal of `json_schema` is not an error yet
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    def _error(self, exc: openai.OpenAIError) -> ModelError:
        """Our error for the client's. Callers raise it `from None`: the client's
        exceptions carry request headers and server text; our texts never carry a key."""
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable(f"{self.name}: timed out after retries")
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable(
                f"{self.name}: connection failed after retries ({self._redact(exc.message)})"
            )
        if isinstance(exc, openai.APIStatusError):
            detail = self._redact(_server_message(exc))
            if exc.status_code in _TRANSIENT_STATUSES or exc.status_code >= 500:
                return ModelUnavailable(
                    f"{self.name}: HTTP {exc.status_code} after retries ({detail})"
                )
            return ModelError(f"{self.name}: HTTP {exc.status_code} ({detail})")
        return ModelError(f"{self.name}: {self._redact(str(exc))}")

    def _redact(self, text: str) -> str:
        key = self.client.api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return _SECRET.sub("***", text)[:300]


def forget_fallbacks() -> None:
    """Ask every server for `json_schema` again (tests; a process that changed servers)."""
    with _FALLBACK_LOCK:
        _FALLEN_BACK.clear()


def openai_model_from_env(settings: ModelSettings | None = None) -> OpenAIModel:
    """`AGENTBUS_OPENAI_MODEL` (default gpt-4o-mini) at `OPENAI_BASE_URL` with `OPENAI_API_KEY`,
    `AGENTBUS_MODEL_TIMEOUT` seconds per attempt and `AGENTBUS_MODEL_MAX_TOKENS` per answer.

    A base URL without a key is a local server that needs none; neither is an error.
    """
    settings = settings or ModelSettings.from_env()
    if settings.api_key is None and settings.base_url is None:
        raise ConfigurationError(
            "OPENAI_API_KEY is not set (set OPENAI_BASE_URL for a server that needs no key)"
        )
    return OpenAIModel(
        settings.model,
        base_url=settings.base_url,
        api_key=settings.api_key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        max_tokens=settings.max_tokens,
    )


def schema_in_prompt(
    messages: list[ChatCompletionMessageParam], schema: dict[str, Any]
) -> list[ChatCompletionMessageParam]:
    """The messages with the JSON schema stated in a system message of their own, first,
    for servers that cannot be given it as `response_format`."""
    stated = (
        "Answer with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    )
    return [{"role": "system", "content": stated}, *messages]


def _names_response_format(exc: openai.APIStatusError) -> bool:
    """Whether a 4xx or 5xx refuses the `response_format` (rather than the request)."""
    if exc.status_code < 400 or exc.status_code in (408, 429):
        return False
    text = f"{exc.message} {json.dumps(exc.body, default=str) if exc.body else ''}"
    return "response_format" in text or "json_schema" in text


def _schema_ignored(output: type[BaseModel], content: str, finish_reason: str | None) -> bool:
    """Whether an answer shows the server ignored the schema: not a JSON object, or one
    whose keys are not the schema's. (An answer cut at the token limit, or one of the
    right shape with a wrong value, says nothing about the server.)"""
    if finish_reason == "length":
        return False
    fenced = _FENCE.match(content.strip())
    try:
        data = json.loads(fenced.group(1) if fenced else content)
    except ValueError:
        return True
    return not isinstance(data, dict) or set(data) != set(output.model_fields)


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}


def _parse(output: type[BaseModel], content: str) -> BaseModel:
    """Parse the answer; tolerate a Markdown fence some compatible servers add."""
    fenced = _FENCE.match(content.strip())
    return output.model_validate_json(fenced.group(1) if fenced else content)


def _excerpt(content: str, side: int = 300) -> str:
    """The head and tail of an answer: enough to see how it went wrong, bounded."""
    if len(content) <= 2 * side:
        return repr(content)
    return f"{content[:side]!r} ... ({len(content) - 2 * side} characters) ... {content[-side:]!r}"


def _describe(exc: ValueError, finish_reason: str | None) -> str:
    if finish_reason == "length":
        return "the answer was cut off at the token limit"
    if isinstance(exc, ValidationError):
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return "it is not valid JSON"
        fields = [
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in exc.errors()[:3]
        ]
        return "it does not match the schema (" + "; ".join(fields) + ")"
    return "it is not valid JSON"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
    return "no detail"


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "OpenAIModel",
    "forget_fallbacks",
    "openai_model_from_env",
    "response_format",
    "schema_in_prompt",
    "strict_json_schema",
]
