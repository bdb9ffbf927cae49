"""An agent run as spans and metrics: node and tool spans, token usage and cost.

The agent runs for real on the in-process broker with SQLite; the model is the
scripted test double, whose token counts are what the assertions check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agentbus.agent import AgentRuntimeOptions
from agentbus.agent.context import COST_ATTRIBUTE
from agentbus.agent.runtime import AgentRunner
from agentbus.conventions import POLICY_PROVIDER
from agentbus.llm import ScriptedModel, Usage
from agentbus.metrics import use_meter_provider
from agentbus.telemetry import use_tracer_provider
from agents.restock import declaration
from agents.restock.proposal import RestockProposal
from tests.agents.harness import Shop, low, order, product

PRICES = {"gpt-test": [2.0, 8.0]}  # dollars per 1M input and output tokens


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        use_tracer_provider(tracing)
        use_meter_provider(MeterProvider(metric_readers=[self.reader]))

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found += [(dict(p.attributes or {}), p) for p in m.data.data_points]
        return found

    def total(self, metric: str, **where: str) -> float:
        selected = [
            p
            for attrs, p in self.points(metric)
            if all(attrs.get(k) == v for k, v in where.items())
        ]
        return sum(getattr(p, "sum", getattr(p, "value", 0)) for p in selected)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    yield recorded
    use_tracer_provider(None)
    use_meter_provider(None)


def proposal() -> RestockProposal:
    return RestockProposal(
        quantity=24, urgency="high", rationale="Lead time demand.", confidence=0.8, evidence=[]
    )


def runner(model: ScriptedModel, budget: int | None = None) -> AgentRunner:
    agent = declaration()
    agent.token_budget_per_hour = budget
    return AgentRunner(agent, AgentRuntimeOptions(model=lambda: model))


async def test_a_run_is_one_tree_of_node_tool_and_chat_spans(
    tmp_path: Path, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL_PRICES", json.dumps(PRICES))
    model = ScriptedModel([proposal()], name="gpt-test", usage=Usage(1200, 300))
    agent = runner(model)
    async with Shop(tmp_path, [agent.service]) as shop:
        await shop.publish([product("SKU-A"), *[order(f"o{d}", "SKU-A", 2, d) for d in range(5)]])
        await shop.publish([low("SKU-A", 1)])

    [run] = telemetry.finished("invoke_agent restock-agent")
    nodes = {s.name: s for s in telemetry.spans.get_finished_spans() if s.name.startswith("node ")}
    assert set(nodes) == {"node gather", "node decide", "node guard"}
    assert all(
        s.parent is not None and s.parent.span_id == run.context.span_id for s in nodes.values()
    )
    tools = {
        s.attributes["gen_ai.tool.name"]: s
        for s in telemetry.spans.get_finished_spans()
        if s.name.startswith("execute_tool ")
    }  # type: ignore[index]
    assert {"product", "demand_history", "open_purchase_orders"} <= set(tools)
    assert tools["product"].parent is not None
    assert tools["product"].parent.span_id == nodes["node gather"].context.span_id
    [chat] = telemetry.finished("chat gpt-test")
    assert chat.parent is not None
    assert chat.parent.span_id == nodes["node decide"].context.span_id
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == 1200
    assert attributes["gen_ai.usage.output_tokens"] == 300
    assert attributes["gen_ai.provider.name"] == "scripted"
    assert attributes[COST_ATTRIBUTE] == pytest.approx((1200 * 2.0 + 300 * 8.0) / 1e6)
    assert "gen_ai.input.messages" not in attributes, "prompt text only when opted in"

    published = [
        s
        for s in telemetry.spans.get_finished_spans()
        if s.name.startswith("publish ") and s.name.endswith(":restock.recommended")
    ]
    [suggestion] = published
    assert suggestion.parent is not None
    assert suggestion.parent.span_id == run.context.span_id
    assert suggestion.context.trace_id == run.context.trace_id
    [recommended] = shop.of_type("restock.recommended")
    assert recommended.traceparent is not None
    assert recommended.traceparent.split("-")[1] == f"{run.context.trace_id:032x}"


async def test_the_run_span_follows_the_genai_agent_conventions(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """gen-ai-agent-spans.md, "Invoke agent span" (semantic conventions 1.4x)."""
    model = ScriptedModel([proposal()], name="gpt-test", usage=Usage(1200, 300))
    agent = runner(model)
    async with Shop(tmp_path, [agent.service]) as shop:
        await shop.publish([product("SKU-A")])
        await shop.publish([low("SKU-A", 1)])
    [run] = telemetry.finished("invoke_agent restock-agent")
    attributes = dict(run.attributes or {})
    # Span name SHOULD be `invoke_agent {gen_ai.agent.name}`; kind MAY be INTERNAL for an
    # agent that runs in the same process.
    assert run.name == f"invoke_agent {attributes['gen_ai.agent.name']}"
    assert run.kind is SpanKind.INTERNAL
    # Required: gen_ai.operation.name ("invoke_agent") and gen_ai.provider.name.
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.provider.name"] == "scripted"
    # Conditionally Required if available: gen_ai.request.model; when available:
    # gen_ai.agent.name and gen_ai.conversation.id.
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.agent.name"] == "restock-agent"
    assert str(attributes["gen_ai.conversation.id"]).startswith("restock-agent:")
    # Recommended: gen_ai.response.model and token usage.
    assert attributes["gen_ai.response.model"] == "gpt-test"
    assert attributes["gen_ai.usage.input_tokens"] == 1200
    assert attributes["gen_ai.usage.output_tokens"] == 300
    # error.type only when the run failed.
    assert "error.type" not in attributes


async def test_a_run_without_a_model_still_names_its_provider(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """Without a model the agent's offline policy decides: gen_ai.provider.name is still
    Required, and gen_ai.request.model is left out, as nothing is requested."""
    agent = AgentRunner(declaration(), AgentRuntimeOptions(model=lambda: None))
    async with Shop(tmp_path, [agent.service]) as shop:
        await shop.publish([product("SKU-A")])
        await shop.publish([low("SKU-A", 1)])
    [run] = telemetry.finished("invoke_agent restock-agent")
    attributes = dict(run.attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.provider.name"] == POLICY_PROVIDER
    assert "gen_ai.request.model" not in attributes
    assert "gen_ai.response.model" not in attributes
    assert attributes["gen_ai.usage.input_tokens"] == 0


async def test_token_usage_cost_and_outcomes_reach_the_metrics(
    tmp_path: Path, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBUS_MODEL_PRICES", json.dumps(PRICES))
    model = ScriptedModel([proposal(), proposal()], name="gpt-test", usage=Usage(1200, 300))
    agent = runner(model, budget=1500)  # the first run spends it all
    async with Shop(tmp_path, [agent.service]) as shop:
        await shop.publish([product("SKU-A"), product("SKU-B")])
        first = low("SKU-A", 1)
        await shop.publish([first, first])  # the duplicate starts nothing
        await shop.publish([low("SKU-B", 2)])

    def total(metric: str, **where: str) -> float:
        return telemetry.total(metric, **{k.replace("__", "."): v for k, v in where.items()})

    assert total("gen_ai.client.token.usage", gen_ai__token__type="input") == 1200
    assert total("gen_ai.client.token.usage", gen_ai__token__type="output") == 300
    assert total("agentbus.agent.model_cost", gen_ai__response__model="gpt-test") == pytest.approx(
        0.0048
    )
    assert total("agentbus.agent.model_calls", outcome="answered") == 1
    assert total("agentbus.agent.fallbacks", reason="budget") == 1
    assert total("agentbus.agent.runs", outcome="completed") == 2
    assert total("agentbus.agent.runs", outcome="duplicate") == 1
    assert total("agentbus.agent.suggestions", status="pending") == 2
    assert (
        total(
            "agentbus.consumer.events",
            messaging__consumer__group__name="restock-agent",
            messaging__rabbitmq__destination__routing_key="inventory.low",
            outcome="processed",
        )
        == 3
    )
    durations = telemetry.points("messaging.process.duration")
    assert sum(p.count for _, p in durations) >= 5


async def test_prompt_and_completion_text_only_when_opted_in(
    tmp_path: Path, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    agent = runner(ScriptedModel([proposal()], name="gpt-test"))
    async with Shop(tmp_path, [agent.service]) as shop:
        await shop.publish([product("SKU-A")])
        await shop.publish([low("SKU-A", 1)])
    [chat] = telemetry.finished("chat gpt-test")
    attributes = dict(chat.attributes or {})
    sent = json.loads(str(attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "SKU-A" in sent[1]["parts"][0]["content"]
    answered = json.loads(str(attributes["gen_ai.output.messages"]))
    assert json.loads(answered[0]["parts"][0]["content"])["quantity"] == 24
