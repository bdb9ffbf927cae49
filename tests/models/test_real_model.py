"""The model port against a real OpenAI-compatible server: llama.cpp's own (PyPI
xllamacpp) over SmolLM2-135M-Instruct, started once per session (tests/conftest.py).
Refusals, 429s, 5xx and hangs stay with the fake server (tests/unit/test_llm.py):
a real one cannot be made to produce them on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agentbus.agent import AgentRuntimeOptions
from agentbus.agent.runtime import AgentRunner
from agentbus.llm import ChatMessage, MalformedOutput, ModelRequest, OpenAIModel
from agentbus.llm.openai_model import forget_fallbacks
from agentbus.metrics import use_meter_provider
from agentbus.telemetry import use_tracer_provider
from agents.restock import declaration
from agents.restock.agent import PROMPT
from agents.restock.proposal import MAX_EVIDENCE, MAX_RATIONALE, RestockProposal
from evals.local_model import MODEL, LocalModelServer
from tests.agents.harness import Shop, low, order, product
from tests.agents.test_agent_telemetry import Telemetry

pytestmark = pytest.mark.model


class Plan(BaseModel):
    quantity: int = Field(ge=1, le=1000)
    reason: str = Field(max_length=200)


def plan_request(sku: str = "SKU-1", *, limit: int | None = None) -> ModelRequest:
    return ModelRequest(
        messages=(
            ChatMessage("system", "You plan restocks. Answer in JSON."),
            ChatMessage(
                "user",
                f"{sku} has 3 units left and sells 5 a day; the supplier needs 7 days. "
                "How many units should we order?",
            ),
        ),
        output=Plan,
        max_output_tokens=limit,
    )


def restock_request() -> ModelRequest:
    data = (
        '<<<DATA\n{"trigger":{"sku":"SKU-9","available":4,"reorder_point":10,'
        '"max_stock":40,"lead_time_days":3},"trigger_id":"low-SKU-9-1",'
        '"demand":{"daily_mean":2.5,"daily_std":1.1}}\nDATA>>>'
    )
    return ModelRequest(
        messages=(
            ChatMessage("system", PROMPT.render(review_days="7", max_quantity="120")),
            ChatMessage("user", "Data:\n" + data),
        ),
        output=RestockProposal,
    )


Counters = Callable[[], dict[str, float]]


def counters(server: LocalModelServer) -> Counters:
    """The server's token counters: prompt tokens (processed and from its cache) and
    tokens predicted."""

    def read() -> dict[str, float]:
        found = server.metrics()
        return {
            "input": found["llamacpp:prompt_tokens_total"]
            + found.get("llamacpp:prompt_tokens_cached_total", 0.0),
            "output": found["llamacpp:tokens_predicted_total"],
        }

    return read


@pytest.fixture
async def model(model_server: LocalModelServer) -> AsyncIterator[OpenAIModel]:
    made = OpenAIModel(MODEL, base_url=model_server.base_url, timeout=300)
    yield made
    await made.aclose()


@pytest.fixture(autouse=True)
def fresh_fallbacks() -> Iterator[None]:
    forget_fallbacks()
    yield
    forget_fallbacks()


async def test_json_schema_answers_fit_the_bounds_and_usage_is_the_servers(
    model: OpenAIModel, model_server: LocalModelServer
) -> None:
    read = counters(model_server)
    before = read()
    response = await model.complete(restock_request())
    after = read()
    assert model.structured == "json_schema"  # llama.cpp enforces it: no fallback
    assert isinstance(response.output, RestockProposal)
    assert len(response.output.rationale) <= MAX_RATIONALE
    assert len(response.output.evidence) <= MAX_EVIDENCE
    assert response.model == MODEL
    assert response.usage.input_tokens == after["input"] - before["input"]
    assert response.usage.output_tokens == after["output"] - before["output"]


async def test_json_object_with_the_schema_in_the_prompt(
    model_server: LocalModelServer,
) -> None:
    model = OpenAIModel(
        MODEL, base_url=model_server.base_url, timeout=300, structured="json_object"
    )
    try:
        response = await model.complete(plan_request("SKU-2"))
    finally:
        await model.aclose()
    assert isinstance(response.output, Plan)
    assert 1 <= response.output.quantity <= 1000


async def test_an_answer_cut_at_the_token_limit_is_malformed(
    model: OpenAIModel, model_server: LocalModelServer
) -> None:
    read = counters(model_server)
    before = read()
    with pytest.raises(MalformedOutput, match="cut off at the token limit"):
        await model.complete(plan_request("SKU-3", limit=6))
    # Both requests stopped at the limit, on the server's count.
    assert read()["output"] - before["output"] == 2 * 6


async def test_spans_and_metrics_carry_the_token_usage_the_server_counted(
    model_server: LocalModelServer, tmp_path: Path
) -> None:
    telemetry = Telemetry()
    model = OpenAIModel(MODEL, base_url=model_server.base_url, timeout=300)
    agent = AgentRunner(declaration(), AgentRuntimeOptions(model=lambda: model))
    read = counters(model_server)
    try:
        before = read()
        async with Shop(tmp_path, [agent.service]) as shop:
            await shop.publish(
                [product("SKU-A"), *[order(f"o{d}", "SKU-A", 2, d) for d in range(5)]]
            )
            await shop.publish([low("SKU-A", 1)])
        after = read()
        [suggestion] = shop.of_type("restock.recommended")
        [chat] = telemetry.finished(f"chat {MODEL}")
        attributes: dict[str, Any] = dict(chat.attributes or {})
    finally:
        await model.aclose()
        use_tracer_provider(None)
        use_meter_provider(None)
    assert suggestion.data.model == MODEL, "the model decided, not the policy"
    assert attributes["gen_ai.response.model"] == MODEL
    assert attributes["gen_ai.usage.input_tokens"] == after["input"] - before["input"]
    assert attributes["gen_ai.usage.output_tokens"] == after["output"] - before["output"]
    by_type = {
        kind: telemetry.total("gen_ai.client.token.usage", **{"gen_ai.token.type": kind})
        for kind in ("input", "output")
    }
    assert by_type == {
        "input": after["input"] - before["input"],
        "output": after["output"] - before["output"],
    }
