"""The model port: one request in, one structured answer out.

The platform never talks to a provider directly: agents build a `ModelRequest`
(messages plus the pydantic model the answer must parse into) and get back a
`ModelResponse` whose `output` is an instance of that model. Whatever the model
said is untrusted: callers still check the output against hard bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from agentbus.errors import AgentbusError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ModelRequest:
    messages: tuple[ChatMessage, ...]
    output: type[BaseModel]
    """The structured output schema: the answer must parse into this model."""
    temperature: float = 0.0
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelResponse:
    output: BaseModel
    """An instance of the request's `output` model."""
    model: str
    """The model that answered, as the provider names it (often a dated snapshot)."""
    provider: str
    usage: Usage
    """Tokens over every request made for this answer."""
    finish_reason: str | None
    attempts: int = 1
    """Requests made, counting the second one after a malformed answer."""
    seconds: float | None = None
    """How long the answer took when it was made (a cassette replays the recorded time)."""


@runtime_checkable
class Model(Protocol):
    """What agents call. Implementations: `OpenAIModel`, `ScriptedModel`, `CassetteModel`."""

    name: str
    provider: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


class ModelError(AgentbusError):
    """A model could not give a usable answer. Root of the model errors."""


class MalformedOutput(ModelError):
    """The answer would not parse into the schema, even after one retry."""


class ModelUnavailable(ModelError):
    """Rate limited or failing after the client's retries, unreachable, or too slow."""


class CassetteMiss(ModelError):
    """Strict replay found no recording for the request."""
