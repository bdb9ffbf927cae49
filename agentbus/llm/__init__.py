"""The model port and its adapters.

`Model` is the port agents call: a `ModelRequest` in, a `ModelResponse` whose
output is an instance of the requested pydantic model out. Adapters:
`OpenAIModel` (any OpenAI-compatible endpoint, strict structured output),
`ScriptedModel` (the test double) and `CassetteModel` (record once, replay
offline). Every failure is a `ModelError`.
"""

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
from agentbus.llm.openai_model import OpenAIModel, openai_model_from_env
from agentbus.llm.scripted import ScriptedModel

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
