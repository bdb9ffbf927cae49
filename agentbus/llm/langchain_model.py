"""Any LangChain chat model behind the model port (the `langchain` extra).

`AGENTBUS_MODEL=langchain:PROVIDER:MODEL` builds one with LangChain's
`init_chat_model` (Anthropic, Bedrock, Vertex and the rest, each with its own
LangChain package and credentials). Structured output is asked for with the
model's own `with_structured_output`; a model without it (LangChain's fake chat
models among them) gets the schema in the prompt and its text is parsed here.
Either way an answer that does not parse is asked for once more, then
`MalformedOutput`, as with `OpenAIModel`. Usage comes from the provider's
metadata on the message (`usage_metadata`), never from a count made here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from agentbus.errors import ConfigurationError
from agentbus.llm.base import (
    ChatMessage,
    MalformedOutput,
    ModelRequest,
    ModelResponse,
    ModelUnavailable,
    Usage,
)

_ECHO_LIMIT = 2000  # of a rejected answer, quoted back when asking again


class LangChainModel:
    def __init__(self, chat: BaseChatModel, *, name: str, provider: str) -> None:
        self.chat = chat
        self.name = name
        self.provider = provider

    def __repr__(self) -> str:
        return f"LangChainModel({self.provider}:{self.name})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        messages = [_message(m) for m in request.messages]
        structured = self._structured(request.output)
        if structured is None:
            messages = [SystemMessage(_schema_note(request.output)), *messages]
        usage = Usage(0, 0)
        model = self.name
        problem = ""
        started = time.perf_counter()
        for attempt in (1, 2):
            raw, parsed, error = await self._ask(structured, messages)
            usage = _add(usage, raw)
            model = str(raw.response_metadata.get("model_name") or model)
            text = raw.text if isinstance(raw.content, (str, list)) else ""
            if parsed is None and error is None:
                try:
                    parsed = _parse(request.output, text)
                except ValueError as exc:
                    error = exc
            if isinstance(parsed, dict):  # some providers hand back the dict, not the model
                try:
                    parsed = request.output.model_validate(parsed)
                except ValidationError as exc:
                    error, parsed = exc, None
            if isinstance(parsed, request.output):
                finish = raw.response_metadata.get("finish_reason") or raw.response_metadata.get(
                    "stop_reason"
                )
                return ModelResponse(
                    output=parsed,
                    model=model,
                    provider=self.provider,
                    usage=usage,
                    finish_reason=None if finish is None else str(finish),
                    attempts=attempt,
                    seconds=round(time.perf_counter() - started, 3),
                )
            problem = _describe(error)
            messages = [
                *messages,
                AIMessage(text[:_ECHO_LIMIT] or "(no text)"),
                HumanMessage(
                    f"That answer was rejected: {problem}. Reply again with only a JSON "
                    "object that matches the schema."
                ),
            ]
        raise MalformedOutput(
            f"{self.name}: no answer fit {request.output.__name__} in 2 requests ({problem})"
        )

    def _structured(self, output: type[BaseModel]) -> Any:
        try:
            return self.chat.with_structured_output(output, include_raw=True)
        except NotImplementedError:
            return None

    async def _ask(
        self, structured: Any, messages: list[BaseMessage]
    ) -> tuple[AIMessage, Any, Exception | None]:
        try:
            if structured is None:
                answer = await self.chat.ainvoke(messages)
                if not isinstance(answer, AIMessage):
                    raise TypeError(f"{type(answer).__name__} is not a chat answer")
                return answer, None, None
            found = await structured.ainvoke(messages)
        except (MalformedOutput, ModelUnavailable):
            raise
        except Exception as exc:
            # Providers raise their own error types; none of their text (which may quote
            # request headers) goes further than its type and first line.
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise ModelUnavailable(f"{self.name}: {type(exc).__name__}: {first}") from None
        raw = found.get("raw")
        if not isinstance(raw, AIMessage):
            raise ModelUnavailable(f"{self.name}: the provider gave no chat answer")
        return raw, found.get("parsed"), found.get("parsing_error")


def langchain_model(spec: str) -> LangChainModel:
    """The model `AGENTBUS_MODEL=langchain:PROVIDER:MODEL` names."""
    provider, _, name = spec.partition(":")
    if not provider or not name:
        raise ConfigurationError(
            f"AGENTBUS_MODEL=langchain:{spec}: name the provider and the model, "
            "e.g. langchain:anthropic:claude-sonnet-4-5"
        )
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ConfigurationError(
            "AGENTBUS_MODEL=langchain:... needs the langchain extra: uv sync --extra langchain "
            "(and the provider's LangChain package)"
        ) from None
    try:
        chat = init_chat_model(name, model_provider=provider, temperature=0)
    except (ImportError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"AGENTBUS_MODEL=langchain:{spec}: {first}") from None
    return LangChainModel(chat, name=name, provider=provider)


def _message(message: ChatMessage) -> BaseMessage:
    if message.role == "system":
        return SystemMessage(message.content)
    if message.role == "user":
        return HumanMessage(message.content)
    return AIMessage(message.content)


def _schema_note(output: type[BaseModel]) -> str:
    return (
        "Answer with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(output.model_json_schema(), separators=(",", ":"), ensure_ascii=False)
    )


def _parse(output: type[BaseModel], text: str) -> BaseModel:
    body = text.strip()
    if body.startswith("```"):  # a Markdown fence some models add
        body = body.strip("`").removeprefix("json").strip()
    return output.model_validate_json(body)


def _describe(error: Exception | None) -> str:
    if isinstance(error, ValidationError):
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return "it is not valid JSON"
        fields = [
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in error.errors()[:3]
        ]
        return "it does not match the schema (" + "; ".join(fields) + ")"
    return "it is not valid JSON" if error is not None else "no answer"


def _add(usage: Usage, raw: AIMessage) -> Usage:
    meta: Mapping[str, Any] = raw.usage_metadata or {}
    return Usage(
        usage.input_tokens + int(meta.get("input_tokens", 0) or 0),
        usage.output_tokens + int(meta.get("output_tokens", 0) or 0),
    )
