"""A run's accounting lives beside the agent's state, not in it: recorded by
`ctx.complete`, checkpointed with the node that made the call, booked once.

The agent here has a pydantic model for its state, which the two shop agents do
not: `suggest` gets the model, not LangGraph's dict of channel values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from agentbus.agent import Agent, AgentRuntimeOptions, Run, RunContext
from agentbus.agent import tables as agent_tables
from agentbus.agent.accounting import CHANNEL, ChannelSchema
from agentbus.agent.runtime import AgentRunner
from agentbus.envelope import Event
from agentbus.llm import ChatMessage, ModelRequest, ScriptedModel, Usage
from events import InventoryLow, RestockRecommended
from tests.agents.harness import Shop, low


class Tally(BaseModel):
    trigger_id: str
    sku: str
    quantity: int = 0
    checked: bool = False


class Answer(BaseModel):
    quantity: int


def counting_agent(
    dies_once_after_the_call: list[str], *, returns_state: bool = False
) -> Agent[InventoryLow, Tally, Any]:
    def build_graph(ctx: RunContext) -> StateGraph[Tally]:
        async def decide(state: Tally) -> Any:
            request = ModelRequest(messages=(ChatMessage("user", "How many?"),), output=Answer)
            decision = await ctx.complete(request, fallback=lambda: Answer(quantity=1))
            quantity = decision.output.model_dump()["quantity"]
            if returns_state:  # a node may answer with its state's model, not a dict
                return state.model_copy(update={"quantity": quantity})
            return {"quantity": quantity}

        async def check(state: Tally) -> dict[str, Any]:
            if not dies_once_after_the_call:
                dies_once_after_the_call.append(state.trigger_id)
                raise RuntimeError("the process died after the model call was checkpointed")
            return {"checked": True}

        graph: StateGraph[Tally] = StateGraph(Tally)
        graph.add_node("decide", decide)
        graph.add_node("check", check)
        graph.add_edge(START, "decide")
        graph.add_edge("decide", "check")
        graph.add_edge("check", END)
        return graph

    def initial_state(event: Event[InventoryLow]) -> Tally:
        return Tally(trigger_id=event.id, sku=event.data.sku)

    def suggest(state: Tally, event: Event[InventoryLow], run: Run) -> RestockRecommended:
        assert isinstance(state, Tally)
        assert state.checked
        return RestockRecommended(
            recommendation_id=run.suggestion_id,
            sku=state.sku,
            quantity=state.quantity,
            urgency="low",
            rationale="Counted.",
            evidence=[event.id],
            confidence=0.5,
            agent="counting-agent",
            model=run.model,
            prompt_version="none/v1",
            trigger_event_id=event.id,
        )

    return Agent(
        name="counting-agent",
        triggers=("inventory.low",),
        suggestion_type="restock.recommended",
        build_graph=build_graph,
        initial_state=initial_state,
        suggest=suggest,
        token_budget_per_hour=1_000_000,
    )


@pytest.mark.parametrize("returns_state", [False, True], ids=["dict", "model"])
async def test_a_run_resumed_after_its_model_call_books_the_call_once(
    tmp_path: Path, returns_state: bool
) -> None:
    died: list[str] = []
    model = ScriptedModel([Answer(quantity=7)], name="gpt-test", usage=Usage(100, 20))
    agent = counting_agent(died, returns_state=returns_state)
    runner = AgentRunner(agent, AgentRuntimeOptions(model=lambda: model))
    async with Shop(tmp_path, [runner.service]) as shop:
        await shop.publish([low("SKU-A", 1)])

        def booked(connection: sa.Connection) -> tuple[Any, Any]:
            run = connection.execute(sa.select(agent_tables.runs)).one()
            usage = connection.execute(sa.select(agent_tables.usage)).one()
            return run, usage

        run, usage = await runner.store.database.read(booked)
    [suggestion] = shop.of_type("restock.recommended")
    assert died, "the run died once, after the decide node's checkpoint"
    assert len(model.requests) == 1, "the resumed run did not ask the model again"
    assert suggestion.data.quantity == 7
    assert suggestion.data.model == "gpt-test", "the accounting came back from the checkpoint"
    assert (run.model, run.input_tokens, run.output_tokens) == ("gpt-test", 100, 20)
    assert (usage.input_tokens, usage.output_tokens, usage.fallbacks) == (100, 20, 0)


async def test_without_a_model_the_policy_decides_and_nothing_is_booked(tmp_path: Path) -> None:
    runner = AgentRunner(counting_agent(["no crash"]), AgentRuntimeOptions(model=lambda: None))
    async with Shop(tmp_path, [runner.service]) as shop:
        await shop.publish([low("SKU-A", 1)])
        runs = await runner.store.database.read(
            lambda c: c.execute(sa.select(agent_tables.runs)).all()
        )
        used = await runner.store.database.read(
            lambda c: c.execute(sa.select(agent_tables.usage)).all()
        )
    [suggestion] = shop.of_type("restock.recommended")
    assert suggestion.data.model == "policy"
    assert suggestion.data.quantity == 1
    assert [(r.model, r.input_tokens, r.output_tokens) for r in runs] == [("policy", 0, 0)]
    assert used == []


def test_the_channel_schema_names_the_channel() -> None:
    assert set(ChannelSchema.__annotations__) == {CHANNEL}
