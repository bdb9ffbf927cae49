"""Models behind one port: OpenAI-compatible, scripted (tests), cassettes (replay)."""

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
