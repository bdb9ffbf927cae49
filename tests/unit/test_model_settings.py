"""Settings for real model servers: read once from the environment, checked at start."""

from __future__ import annotations

import pytest

from agentbus.errors import ConfigurationError
from agentbus.memory import OpenAIEmbedder, embedder_from_env
from agentbus.settings import ModelSettings
from tests.support.openai_server import FakeOpenAI


def test_defaults_and_what_each_variable_sets() -> None:
    default = ModelSettings.from_env({})
    assert (default.timeout, default.max_tokens, default.replay_idle_wait) == (30.0, 1024, 300.0)
    assert default.base_url is default.embeddings_base_url is None
    chat = {"OPENAI_BASE_URL": "http://chat:8080/v1", "OPENAI_API_KEY": "k-chat"}
    both = ModelSettings.from_env(chat)
    assert both.embeddings_base_url == "http://chat:8080/v1"  # the embeddings fall back
    assert both.embeddings_api_key == "k-chat"
    apart = ModelSettings.from_env(
        {
            **chat,
            "AGENTBUS_EMBEDDINGS_BASE_URL": "http://embed:8000/v1",
            "AGENTBUS_EMBEDDINGS_API_KEY": "k-embed",
            "AGENTBUS_MODEL_TIMEOUT": "120",
            "AGENTBUS_MODEL_MAX_TOKENS": "256",
        }
    )
    assert (apart.base_url, apart.embeddings_base_url) == (
        "http://chat:8080/v1",
        "http://embed:8000/v1",
    )
    assert apart.embeddings_api_key == "k-embed"
    assert (apart.timeout, apart.max_tokens) == (120.0, 256)
    # A slow server: the replay waits as long as one answer may take.
    assert apart.replay_idle_wait == 2 * 4 * 120.0
    settable = ModelSettings.from_env(
        {"AGENTBUS_MODEL_TIMEOUT": "120", "AGENTBUS_REPLAY_IDLE_WAIT": "50"}
    )
    assert settable.replay_idle_wait == 50.0
    assert settable.agent_run_timeout is None, "unset: each agent's own run timeout"
    longer = ModelSettings.from_env({"AGENTBUS_AGENT_RUN_TIMEOUT": "900"})
    assert longer.agent_run_timeout == 900.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTBUS_MODEL_TIMEOUT", "soon"),
        ("AGENTBUS_MODEL_TIMEOUT", "0"),
        ("AGENTBUS_MODEL_MAX_TOKENS", "-5"),
        ("AGENTBUS_REPLAY_IDLE_WAIT", "x"),
        ("AGENTBUS_AGENT_RUN_TIMEOUT", "-1"),
    ],
)
def test_a_bad_value_is_a_clear_error(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        ModelSettings.from_env({name: value})


async def test_chat_and_embeddings_reach_two_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeOpenAI() as chat, FakeOpenAI() as embeddings:
        monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
        monkeypatch.setenv("AGENTBUS_EMBEDDINGS_BASE_URL", embeddings.base_url)
        monkeypatch.setenv("AGENTBUS_EMBEDDINGS", "openai:e5-small:8")
        embedder = embedder_from_env()
        assert isinstance(embedder, OpenAIEmbedder)
        await embedder.embed(["a couch"])
        await embedder.embed_queries(["a sofa"])
    assert chat.embedding_calls == []
    stored, searched = embeddings.embedding_calls
    # A server other than OpenAI's hears which texts are queries (e5 servers prefix them).
    assert (stored["input_type"], searched["input_type"]) == ("passage", "query")
    assert stored["dimensions"] == 8
