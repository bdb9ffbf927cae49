"""The LangChain adapter against the model port's promises, driven by LangChain's own
fake chat models (the fake is the subject's collaborator here, not the subject):
structured answers parsed, usage from the provider's metadata, one second request
after a malformed answer and then `MalformedOutput`, provider errors as
`ModelUnavailable`, structured output through `with_structured_output` where the
model has it, and the restock agent deciding with it end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import BaseModel, Field

from agentbus.agent import AgentRuntimeOptions
from agentbus.agent.models import model_from_env
from agentbus.agent.runtime import AgentRunner
from agentbus.errors import ConfigurationError
from agentbus.llm import ChatMessage, MalformedOutput, ModelRequest, ModelUnavailable
from agentbus.llm.langchain_model import LangChainModel
from agentbus.llm.pricing import price, price_table
from agents.restock import declaration
from tests.agents.harness import Shop, low, order, product


class Answer(BaseModel):
    quantity: int = Field(ge=1)
    reason: str


REQUEST = ModelRequest(
    messages=(ChatMessage("system", "Decide."), ChatMessage("user", "Data: 3 units a day.")),
    output=Answer,
)


def said(text: str, tokens: tuple[int, int] = (40, 10), name: str = "fake-model-1") -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata={
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
        response_metadata={"model_name": name, "finish_reason": "stop"},
    )


class Recorder(GenericFakeChatModel):
    """LangChain's generic fake, keeping what it was asked."""

    asked: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.asked.append(list(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)


def fake(*answers: AIMessage) -> Recorder:
    return Recorder(messages=iter(answers))


async def test_an_answer_is_parsed_with_usage_and_model_from_the_provider() -> None:
    chat = fake(said(json.dumps({"quantity": 12, "reason": "cover a week"})))
    model = LangChainModel(chat, name="configured-name", provider="fakeprovider")
    response = await model.complete(REQUEST)
    assert response.output == Answer(quantity=12, reason="cover a week")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (40, 10)
    assert response.model == "fake-model-1"
    assert response.provider == "fakeprovider"
    assert response.attempts == 1
    # Without structured output of its own, the model was told the schema.
    [asked] = chat.asked
    assert "JSON schema" in str(asked[0].content)
    assert '"quantity"' in str(asked[0].content)


async def test_a_malformed_answer_is_asked_again_once_with_the_reason() -> None:
    chat = fake(said("twelve units"), said('```json\n{"quantity": 5, "reason": "r"}\n```'))
    response = await LangChainModel(chat, name="m", provider="p").complete(REQUEST)
    assert response.output == Answer(quantity=5, reason="r")
    assert response.attempts == 2
    assert (response.usage.input_tokens, response.usage.output_tokens) == (80, 20)
    second = chat.asked[1]
    assert "rejected: it is not valid JSON" in str(second[-1].content)


async def test_malformed_twice_raises_after_exactly_two_requests() -> None:
    chat = fake(said('{"quantity": 0, "reason": "r"}'), said("no"), said("unused"))
    with pytest.raises(MalformedOutput, match="in 2 requests"):
        await LangChainModel(chat, name="m", provider="p").complete(REQUEST)
    assert len(chat.asked) == 2


class Failing(GenericFakeChatModel):
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise RuntimeError("503 from the provider\nAuthorization: Bearer sk-secret")


async def test_a_provider_error_is_unavailable_and_shows_no_more_than_its_first_line() -> None:
    model = LangChainModel(Failing(messages=iter([])), name="m", provider="p")
    with pytest.raises(ModelUnavailable) as raised:
        await model.complete(REQUEST)
    assert "503 from the provider" in str(raised.value)
    assert "sk-secret" not in str(raised.value)


class ToolCalling(GenericFakeChatModel):
    """A fake whose structured output is the provider's own (as tool-calling models
    give it): `with_structured_output` answers with raw, parsed and parsing_error."""

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **_: Any) -> Any:
        from langchain_core.runnables import RunnableLambda

        assert include_raw

        def answer(messages: Sequence[BaseMessage]) -> dict[str, Any]:
            raw = said('{"quantity": 7, "reason": "tool"}', (30, 5), "tool-model")
            return {"raw": raw, "parsed": {"quantity": 7, "reason": "tool"}, "parsing_error": None}

        return RunnableLambda(answer)


async def test_a_model_with_structured_output_of_its_own_uses_it() -> None:
    model = LangChainModel(ToolCalling(messages=iter([])), name="m", provider="p")
    response = await model.complete(REQUEST)
    assert response.output == Answer(quantity=7, reason="tool")
    assert response.model == "tool-model"
    assert response.usage.input_tokens == 30


def restock_answers() -> Iterator[AIMessage]:
    proposal = {
        "quantity": 33,
        "urgency": "high",
        "rationale": "Two a day over the lead time and a week.",
        "confidence": 0.6,
        "evidence": [],
    }
    while True:
        yield said(json.dumps(proposal), (900, 60), "fake-restock-model")


async def test_the_restock_agent_decides_with_a_langchain_model(tmp_path: Path) -> None:
    chat = Recorder(messages=restock_answers())
    model = LangChainModel(chat, name="fake-restock-model", provider="fakeprovider")
    agent = AgentRunner(declaration(), AgentRuntimeOptions(model=lambda: model))
    async with Shop(tmp_path, [agent.service]) as shop:
        history = [order(f"o{d}", "SKU-A", 2, d) for d in range(7)]
        await shop.publish([product("SKU-A"), *history, low("SKU-A", 1)])
    [suggestion] = shop.of_type("restock.recommended")
    assert suggestion.data.model == "fake-restock-model"
    assert suggestion.data.quantity == 33
    assert len(chat.asked) == 1
    assert "SKU-A" in str(chat.asked[0][-1].content)


def test_agentbus_model_names_a_langchain_provider_and_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL", "langchain:openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    model = model_from_env()
    assert isinstance(model, LangChainModel)
    assert (model.provider, model.name) == ("openai", "gpt-4o-mini")
    monkeypatch.setenv("AGENTBUS_MODEL", "langchain:gpt-4o-mini")
    with pytest.raises(ConfigurationError, match="name the provider and the model"):
        model_from_env()
    monkeypatch.setenv("AGENTBUS_MODEL", "langchain:no-such-provider:x")
    with pytest.raises(ConfigurationError, match="langchain:no-such-provider:x"):
        model_from_env()


def test_prices_come_from_the_maintained_table_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTBUS_MODEL_PRICES", raising=False)
    listed = price("gpt-4o-mini", 1_000_000, 1_000_000, "openai")
    assert listed > 0
    assert price("SmolLM2-135M-Instruct", 1000, 100, "openai") == 0.0, "a local model"
    monkeypatch.setenv("AGENTBUS_MODEL_PRICES", json.dumps({"gpt-4o-mini": [1.0, 2.0]}))
    configured = price_table()  # read where a run starts
    assert price("gpt-4o-mini", 1_000_000, 1_000_000, "openai", configured) == pytest.approx(3.0)
    snapshot = price("gpt-4o-mini-2024-07-18", 1_000_000, 0, "openai", configured)
    assert snapshot == pytest.approx(1.0), "a dated snapshot takes its model's price"
