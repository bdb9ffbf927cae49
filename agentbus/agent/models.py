"""Choosing an agent's model from the environment."""

from __future__ import annotations

from pathlib import Path

from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError
from agentbus.llm import CassetteModel, Model


def model_from_env() -> Model | None:
    """`AGENTBUS_MODEL`: `policy` (offline, the default without OPENAI_API_KEY), `openai`,
    `cassette:PATH` (strict replay), `record:PATH` (OpenAI, answers recorded) or
    `langchain:PROVIDER:MODEL` (any LangChain chat model; the langchain extra).

    None means the agent's own offline policy decides.
    """
    env = load_environment()
    choice = env.model or ("openai" if env.openai_api_key else "policy")
    if choice == "policy":
        return None
    from agentbus.llm.openai_model import openai_model_from_env  # the client, only when asked for

    if choice == "openai":
        return openai_model_from_env()
    kind, _, path = choice.partition(":")
    if kind == "langchain":
        from agentbus.llm.langchain_model import langchain_model

        return langchain_model(path)
    if kind == "cassette" and path:
        return CassetteModel(Path(path), mode="replay")
    if kind == "record" and path:
        return CassetteModel(Path(path), inner=openai_model_from_env(), mode="record")
    raise ConfigurationError(
        f"AGENTBUS_MODEL={choice!r}: use policy, openai, cassette:PATH, record:PATH "
        "or langchain:PROVIDER:MODEL"
    )
