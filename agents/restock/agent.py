"""The restock agent: `inventory.low` in, one `restock.recommended` out.

gather (tools, memory and past decisions) -> decide (model or policy) -> guard
(bounds checked by code). Every node's result is checkpointed, so a
run resumed after a crash does not ask the model again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from agentbus.agent import Agent, Prompt, Run, RunContext, evidence_known, quote
from agentbus.envelope import Event
from agentbus.environment import load_environment
from agentbus.llm import ChatMessage, ModelRequest
from agents.restock import history, policy
from agents.restock.proposal import MAX_EVIDENCE, MAX_RATIONALE, RestockProposal
from events import InventoryLow, RestockRecommended
from events.decisions import RESTOCK as DECISIONS
from tools import forecast
from tools import restock as tools
from tools.projections.restock import MIGRATIONS, project

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

NAME = "restock-agent"
PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PROMPT = Prompt.load(PROMPTS, "restock", "v2")
MEMORY = "restock-episodes"
CAP_MULTIPLE = 3  # of max_stock


class RestockState(TypedDict, total=False):
    trigger_id: str
    trigger: dict[str, Any]
    at: str
    facts: dict[str, Any]
    decisions: list[dict[str, Any]]
    memories: list[dict[str, Any]]
    proposal: dict[str, Any]
    guard_notes: list[str]
    history: dict[str, Any]


def cap(trigger: Mapping[str, Any], multiple: int = CAP_MULTIPLE) -> int:
    """The most one suggestion may order: `multiple` (RESTOCK_CAP_MULTIPLE) x max stock."""
    return max(1, multiple * int(trigger["max_stock"]))


OfflinePolicy = Callable[
    [Mapping[str, Any], Sequence[Mapping[str, Any]], Mapping[str, Any]], RestockProposal
]


def graph_factory(
    offline: OfflinePolicy = policy.recommend, *, remember: bool = True
) -> Callable[[RunContext], StateGraph[RestockState]]:
    """The graph deciding with `offline` when no model does; `remember=False` recalls nothing."""
    return lambda ctx: build_graph(ctx, offline, remember=remember)


def build_graph(
    ctx: RunContext, offline: OfflinePolicy = policy.recommend, *, remember: bool = True
) -> StateGraph[RestockState]:
    multiple = load_environment().restock_cap_multiple  # read once, as the graph is built

    async def gather(state: RestockState) -> RestockState:
        # Every read before the model in one node and one trip to the database:
        # a resumed run simply reads again, which is cheap and changes nothing.
        trigger = state["trigger"]
        sku = trigger["sku"]
        now = datetime.fromisoformat(state["at"])
        catalog_lead = int(trigger["lead_time_days"])

        def outlook(c: Any) -> dict[str, Any]:
            # Memory first (the lead time deliveries showed), then the forecast over it.
            lead = history.lead_time(c, sku, now, catalog_lead) if remember else {}
            # The review period after the arrival, and what follows it if the SKU is silenced.
            horizon = math.ceil(float(lead.get("days", catalog_lead))) + policy.HORIZON_DAYS
            memory_days = history.MEMORY_DAYS if remember else 0
            found = forecast.demand_forecast(c, sku, now, horizon, memory_days)
            return {"lead_time": lead, "forecast": found.as_dict()}

        reads: dict[str, Callable[[Any], Any]] = {
            "product": lambda c: tools.product(c, sku),
            "demand_history": lambda c: tools.demand_history(c, sku, now).as_dict(),
            "open_purchase_orders": lambda c: tools.open_purchase_orders(c, sku, now),
            "demand_forecast": outlook,
        }
        earlier: list[dict[str, Any]] = []
        if remember:
            others = await ctx.search_memory(
                MEMORY, f"restock of {sku}: suggestions and decisions", limit=5, where={"sku": sku}
            )
            reads["decisions"] = lambda c: tools.past_decisions(c, sku)
            # Only what was remembered before the trigger: a replay may hold later episodes.
            earlier = [
                dict(hit.payload) for hit in others if str(hit.payload.get("at", "")) < state["at"]
            ]
        found = await ctx.tools(reads)
        lead = found["demand_forecast"]["lead_time"]
        return {
            "facts": {
                "trigger_id": state["trigger_id"],
                "trigger": trigger,
                "product": found["product"],
                "demand": found["demand_history"],
                "open_purchase_orders": found["open_purchase_orders"],
                "forecast": found["demand_forecast"]["forecast"],
            },
            "decisions": found.get("decisions", []),
            "history": {"lead_time": lead} if lead else {},
            "memories": earlier,
        }

    async def decide(state: RestockState) -> RestockState:
        facts = state["facts"]
        limit = cap(state["trigger"], multiple)
        request = ModelRequest(
            messages=(
                ChatMessage(
                    "system",
                    PROMPT.render(review_days=str(policy.REVIEW_DAYS), max_quantity=str(limit)),
                ),
                ChatMessage(
                    "user",
                    "Data:\n"
                    + quote(
                        {
                            **facts,
                            "forecast": forecast.summary(
                                facts["forecast"], lead_days(state), policy.REVIEW_DAYS
                            ),
                            "past_decisions": state.get("decisions", []),
                            "history": state.get("history", {}),
                            "similar_episodes": state.get("memories", []),
                        }
                    ),
                ),
            ),
            output=RestockProposal,
        )
        decision = await ctx.complete(
            request,
            fallback=lambda: offline(facts, state.get("decisions", []), state.get("history", {})),
        )
        return {"proposal": decision.output.model_dump()}

    async def guard(state: RestockState) -> RestockState:
        proposal = dict(state["proposal"])
        notes: list[str] = []
        limit = cap(state["trigger"], multiple)
        quantity = int(proposal["quantity"])
        if quantity < 1 or quantity > limit:
            clamped = min(max(quantity, 1), limit)
            notes.append(f"quantity {quantity} clamped to {clamped} (bounds 1..{limit})")
            proposal["quantity"] = clamped
        confidence = float(proposal["confidence"])
        if not 0.0 <= confidence <= 1.0:
            bounded = min(max(confidence, 0.0), 1.0)
            notes.append(f"confidence {confidence:g} clamped to {bounded:g} (bounds 0..1)")
            proposal["confidence"] = bounded
        rationale = str(proposal["rationale"])[:MAX_RATIONALE] or "No rationale given."
        if notes:
            rationale += " [checked by code: " + "; ".join(notes) + "]"
        proposal["rationale"] = rationale
        trigger_id = state["trigger_id"]
        candidates = [str(i) for i in proposal.get("evidence", [])][:MAX_EVIDENCE]
        known = (
            await ctx.tools(
                {"known_event_ids": lambda c: tools.known_event_ids(c, NAME, candidates)}
            )
        )["known_event_ids"]
        evidence = evidence_known([trigger_id, *candidates], known | {trigger_id})
        if len(evidence) < len(dict.fromkeys([trigger_id, *candidates])):
            notes.append("evidence ids of unknown events dropped")
        proposal["evidence"] = evidence
        return {"proposal": proposal, "guard_notes": notes}

    # LangGraph is imported here, as the graph is built: the processes of the application
    # that never run this agent load its declaration without it (about a second).
    from langgraph.graph import END, START, StateGraph

    graph: StateGraph[RestockState] = StateGraph(RestockState)
    graph.add_node("gather", gather)
    graph.add_node("decide", decide)
    graph.add_node("guard", guard)
    graph.add_edge(START, "gather")
    graph.add_edge("gather", "decide")
    graph.add_edge("decide", "guard")
    graph.add_edge("guard", END)
    return graph


def lead_days(state: RestockState) -> float:
    """The lead time the decision works with: what deliveries showed, else the catalog's."""
    shown = state.get("history", {}).get("lead_time", {}).get("days")
    return float(shown if shown is not None else state["trigger"]["lead_time_days"])


def initial_state(event: Event[InventoryLow]) -> RestockState:
    return {
        "trigger_id": event.id,
        "trigger": event.data.model_dump(mode="json"),
        "at": event.time.isoformat(),
    }


def suggest(state: RestockState, event: Event[InventoryLow], run: Run) -> RestockRecommended:
    proposal = state["proposal"]
    return RestockRecommended(
        recommendation_id=run.suggestion_id,
        sku=event.data.sku,
        quantity=proposal["quantity"],
        urgency=proposal["urgency"],
        rationale=proposal["rationale"],
        evidence=proposal["evidence"],
        confidence=proposal["confidence"],
        agent=NAME,
        model=run.model,
        prompt_version=PROMPT.id,
        trigger_event_id=event.id,
    )


def declaration(
    offline: OfflinePolicy = policy.recommend, *, remember: bool = True
) -> Agent[InventoryLow, RestockState, RestockRecommended]:
    """The restock agent; evals swap the offline policy and switch memory off for baselines."""
    environment = load_environment()
    return Agent(
        name=NAME,
        triggers=("inventory.low",),
        suggestion_type="restock.recommended",
        build_graph=graph_factory(offline, remember=remember),
        initial_state=initial_state,
        suggest=suggest,
        decisions=DECISIONS,
        migrations=MIGRATIONS,
        project=project,
        token_budget_per_hour=environment.restock_token_budget,
        coalesce_window=environment.restock_coalesce_seconds,
        description="Turns low stock into a reviewed restock suggestion.",
    )
