"""The model port and its adapters.

`Model` is the port agents call: a `ModelRequest` in, a `ModelResponse` whose
output is an instance of the requested pydantic model out. Adapters:
`OpenAIModel` (any OpenAI-compatible endpoint, strict structured output),
`ScriptedModel` (the test double) and `CassetteModel` (record once, replay
offline). Every failure is a `ModelError`.

`OpenAIModel` is imported on first use: the openai client takes over half a second
to import, and most processes that load an application (a service, a CLI command)
never call a model.
"""

from typing import TYPE_CHECKING, Any

from agentbus.llm.base import (
    CassetteMiss,
    ChatMessage,
    MalformedOutput,
    Model,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelUnavailable,
    Usage,
)
from agentbus.llm.cassette import CassetteModel
from agentbus.llm.scripted import ScriptedModel

if TYPE_CHECKING:
    from agentbus.llm.openai_model import OpenAIModel, openai_model_from_env

_LAZY = ("OpenAIModel", "openai_model_from_env")

__all__ = [
    "CassetteMiss",
    "CassetteModel",
    "ChatMessage",
    "MalformedOutput",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "ModelUnavailable",
    "OpenAIModel",
    "ScriptedModel",
    "Usage",
    "openai_model_from_env",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agentbus.llm import openai_model

        return getattr(openai_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
