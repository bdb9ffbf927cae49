"""Any OpenAI-compatible Chat Completions endpoint, with strict structured output.

Retries are layered on purpose. Transport failures (429, 5xx, 408, timeouts,
connection errors) are retried by the openai client itself, with exponential
backoff and jitter that honours `Retry-After`, up to `max_retries` times. An
answer that arrives but will not parse into the schema (not JSON, failing
validation, a refusal, a truncated answer) is asked for once more here, with the
reason fed back; a second bad answer raises `MalformedOutput`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from agentbus.errors import ConfigurationError
from agentbus.llm.base import (
    ChatMessage,
    MalformedOutput,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelUnavailable,
    Usage,
)

DEFAULT_MODEL = "gpt-4o-mini"

# Statuses the client retries (see openai's `_should_retry`): after its retries they
# mean the service is unavailable; any other status is a request the service refused.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})
_SECRET = re.compile(r"\b(?:sk|rk|sess)-[A-Za-z0-9_*\-]{6,}|\bBearer\s+\S+", re.IGNORECASE)
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_ECHO_LIMIT = 4000


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
    and `max_retries`. A given `client` is used as it is configured.
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
    ) -> None:
        self.name = model
        self._owns_client = client is None
        if client is not None:
            if base_url is not None or api_key is not None:
                raise ConfigurationError("OpenAIModel: pass either a client or base_url/api_key")
            self.client = client
        else:
            base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
            api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
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
        self._formats: dict[type[BaseModel], ResponseFormatJSONSchema] = {}

    async def aclose(self) -> None:
        """Close the HTTP client, if this model built it."""
        if self._owns_client:
            await self.client.close()

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r}, base_url={str(self.client.base_url)!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        messages = [_message(m) for m in request.messages]
        input_tokens = output_tokens = 0
        problem = ""
        for attempt in (1, 2):
            completion = await self._create(messages, request)
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
                )
        raise MalformedOutput(
            f"{self.name}: no answer fit {request.output.__name__} in 2 requests ({problem})"
        )

    async def _create(
        self, messages: list[ChatCompletionMessageParam], request: ModelRequest
    ) -> ChatCompletion:
        fmt = self._formats.get(request.output)
        if fmt is None:
            fmt = self._formats[request.output] = response_format(request.output)
        limit = request.max_output_tokens
        try:
            return await self.client.chat.completions.create(
                model=self.name,
                messages=messages,
                response_format=fmt,
                temperature=request.temperature,
                max_completion_tokens=openai.omit if limit is None else limit,
            )
        # Errors are raised `from None`: the client's exceptions carry request headers
        # and server text, and our texts never carry an API key.
        except openai.APITimeoutError:
            raise ModelUnavailable(f"{self.name}: timed out after retries") from None
        except openai.APIConnectionError as exc:
            raise ModelUnavailable(
                f"{self.name}: connection failed after retries ({self._redact(exc.message)})"
            ) from None
        except openai.APIStatusError as exc:
            detail = self._redact(_server_message(exc))
            if exc.status_code in _TRANSIENT_STATUSES or exc.status_code >= 500:
                raise ModelUnavailable(
                    f"{self.name}: HTTP {exc.status_code} after retries ({detail})"
                ) from None
            raise ModelError(f"{self.name}: HTTP {exc.status_code} ({detail})") from None
        except openai.OpenAIError as exc:
            raise ModelError(f"{self.name}: {self._redact(str(exc))}") from None

    def _redact(self, text: str) -> str:
        key = self.client.api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return _SECRET.sub("***", text)[:300]


def openai_model_from_env() -> OpenAIModel:
    """`AGENTBUS_OPENAI_MODEL` (default gpt-4o-mini) at `OPENAI_BASE_URL` with `OPENAI_API_KEY`.

    A base URL without a key is a local server that needs none; neither is an error.
    """
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or None
    if api_key is None and base_url is None:
        raise ConfigurationError(
            "OPENAI_API_KEY is not set (set OPENAI_BASE_URL for a server that needs no key)"
        )
    return OpenAIModel(
        os.environ.get("AGENTBUS_OPENAI_MODEL") or DEFAULT_MODEL,
        base_url=base_url,
        api_key=api_key,
    )


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
    "DEFAULT_MODEL",
    "OpenAIModel",
    "openai_model_from_env",
    "response_format",
    "strict_json_schema",
]
