"""Any OpenAI-compatible chat endpoint, with structured output."""

from __future__ import annotations

import json
import os
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat as ResponseFormatJSONSchema
from pydantic import BaseModel, ValidationError

from agentbus.llm.base import (
    MalformedOutput,
    ModelRequest,
    ModelResponse,
    ModelUnavailable,
    Usage,
)


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` in the form strict structured output accepts:
    every property required, no additional properties, definitions inlined."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(definitions[node["$ref"].rsplit("/", 1)[-1]])
            node = {k: walk(v) for k, v in node.items() if k not in ("default", "title")}
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


class OpenAIModel:
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
        # The client retries 429 and 5xx with exponential backoff, honouring Retry-After.
        self.client = client or openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        schema = strict_schema(request.output)
        messages = [
            cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content})
            for m in request.messages
        ]
        response_format = cast(
            ResponseFormatJSONSchema,
            {
                "type": "json_schema",
                "json_schema": {"name": request.output.__name__, "schema": schema, "strict": True},
            },
        )
        input_tokens = output_tokens = 0
        for attempt in (1, 2):  # a malformed answer is asked again once
            try:
                completion = await self.client.chat.completions.create(
                    model=self.name,
                    messages=messages,
                    temperature=request.temperature,
                    max_tokens=request.max_output_tokens,
                    response_format=response_format,
                )
            except openai.APITimeoutError as exc:
                raise ModelUnavailable(f"{self.name}: timed out") from exc
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                raise ModelUnavailable(
                    f"{self.name}: HTTP {exc.status_code} after retries"
                ) from exc
            except openai.APIConnectionError as exc:
                raise ModelUnavailable(f"{self.name}: connection failed") from exc
            except openai.APIStatusError as exc:
                raise ModelUnavailable(f"{self.name}: HTTP {exc.status_code}") from exc
            if completion.usage is not None:
                input_tokens += completion.usage.prompt_tokens
                output_tokens += completion.usage.completion_tokens
            choice = completion.choices[0] if completion.choices else None
            content = choice.message.content if choice is not None else None
            refusal = getattr(choice.message, "refusal", None) if choice is not None else None
            if content and not refusal:
                try:
                    output = request.output.model_validate_json(content)
                except (ValidationError, json.JSONDecodeError):
                    continue
                return ModelResponse(
                    output=output,
                    model=completion.model or self.name,
                    provider=self.provider,
                    usage=Usage(input_tokens, output_tokens),
                    finish_reason=choice.finish_reason if choice is not None else None,
                    attempts=attempt,
                )
        raise MalformedOutput(
            f"{self.name}: the answer did not fit {request.output.__name__} twice"
        )


def openai_model_from_env() -> OpenAIModel:
    return OpenAIModel(
        os.environ.get("AGENTBUS_OPENAI_MODEL", "gpt-4o-mini"),
        base_url=os.environ.get("OPENAI_BASE_URL") or None,
        api_key=os.environ.get("OPENAI_API_KEY") or None,
        timeout=float(os.environ.get("AGENTBUS_MODEL_TIMEOUT", "30")),
    )
