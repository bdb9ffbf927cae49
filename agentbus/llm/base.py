"""The model port: one request in, one structured answer out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel

from agentbus.errors import AgentbusError


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelRequest:
    messages: tuple[ChatMessage, ...]
    output: type[BaseModel]
    temperature: float = 0.0
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelResponse:
    output: BaseModel
    model: str
    provider: str
    usage: Usage
    finish_reason: str | None
    attempts: int = 1


class Model(Protocol):
    name: str
    provider: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


class ModelError(AgentbusError):
    """A model could not give a usable answer."""


class MalformedOutput(ModelError):
    """The answer would not parse into the schema, even after one retry."""


class ModelUnavailable(ModelError):
    """Rate limited or failing after the client's retries, unreachable, or too slow."""


class CassetteMiss(ModelError):
    """Strict replay found no recording for the request."""
