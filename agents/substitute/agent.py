"""The substitute agent: an order rejected as out of stock in, ranked substitutes out.

gather (tools: what was missing, what is in stock in its category) -> recall
(semantic search of the catalog, filtered to those in-stock SKUs) -> decide
(the model ranks, or the similarity order does) -> guard (only candidates that
exist and are in stock; the message is built here from catalog data). When
nothing similar is in stock, the run ends with no suggestion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from agentbus.agent import Agent, Prompt, Run, RunContext, quote
from agentbus.envelope import Event
from agentbus.environment import load_environment
from agentbus.llm import ChatMessage, ModelRequest
from agentbus.memory import Embedder
from agents.substitute.proposal import MAX_RANKED, SubstituteRanking, ranking_of
from events import OrderRejected, Substitute, SubstituteSuggested
from events.decisions import SUBSTITUTE as DECISIONS
from tools import substitute as tools
from tools.projections.substitute import MIGRATIONS, project

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

NAME = "substitute-agent"
PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PROMPT = Prompt.load(PROMPTS, "substitute", "v2")
CATALOG = "product-catalog"  # written by the memory service from product.upserted
MAX_SUBSTITUTES = MAX_RANKED
SEARCHED = 10


def min_score(embedder: Embedder | None = None) -> float:
    """Below this similarity a product is not a substitute, however in stock it is:
    `SUBSTITUTE_MIN_SCORE`, else where the embedder says texts start to be related
    (e5's similarities between unrelated texts run high), else 0.15."""
    configured = load_environment().substitute_min_score
    if configured is not None:
        return configured
    return float(getattr(embedder, "related_from", 0.15))


class SubstituteState(TypedDict, total=False):
    trigger_id: str
    order_id: str
    missing: dict[str, Any] | None
    candidates: list[dict[str, Any]]
    scored: list[dict[str, Any]]
    ranking: list[str]
    substitutes: list[dict[str, Any]]


def build_graph(ctx: RunContext) -> StateGraph[SubstituteState]:
    threshold = min_score(ctx.embedder)  # read once, as the graph is built
    # Each step reads what the steps before it wrote by key: a state without it (a
    # checkpoint from another version of the agent) fails the run, which then starts
    # afresh, rather than reading as "nothing to suggest".

    async def gather(state: SubstituteState) -> SubstituteState:
        order_id = state["order_id"]
        found = await ctx.tools({"missing_item": lambda c: tools.missing_item(c, order_id)})
        missing = found["missing_item"]
        if missing is None:
            return {"missing": None, "candidates": []}
        stocked = await ctx.tools(
            {"in_stock": lambda c: tools.in_stock(c, missing["category"], missing["sku"])}
        )
        return {"missing": missing, "candidates": stocked["in_stock"]}

    async def recall(state: SubstituteState) -> SubstituteState:
        missing, candidates = state["missing"], state["candidates"]
        if not missing or not candidates:
            return {"scored": []}
        by_sku = {c["sku"]: c for c in candidates}
        hits = await ctx.search_memory(
            CATALOG,
            f"{missing['name']}. {missing['description']}",
            limit=SEARCHED,
            where={"category": missing["category"], "sku": list(by_sku)},
        )
        scored = [
            {**by_sku[str(hit.payload["sku"])], "score": round(max(0.0, min(1.0, hit.score)), 4)}
            for hit in hits
            if str(hit.payload.get("sku")) in by_sku
        ]
        return {"scored": [s for s in scored if s["score"] >= threshold]}

    async def decide(state: SubstituteState) -> SubstituteState:
        scored = state["scored"]

        def by_similarity() -> SubstituteRanking:
            return SubstituteRanking(ranking=[s["sku"] for s in scored[:MAX_SUBSTITUTES]])

        if not scored:
            return {"ranking": []}  # no model call: the run's model is the policy
        request = ModelRequest(
            messages=(
                ChatMessage("system", PROMPT.render(max_substitutes=str(MAX_SUBSTITUTES))),
                ChatMessage(
                    "user",
                    "Data:\n" + quote({"missing": state["missing"], "candidates": scored}),
                ),
            ),
            output=ranking_of([s["sku"] for s in scored]),
        )
        decision = await ctx.complete(request, fallback=by_similarity)
        ranking = [str(sku) for sku in decision.output.model_dump()["ranking"]]
        return {"ranking": ranking}

    async def guard(state: SubstituteState) -> SubstituteState:
        # Only SKUs among the in-stock, similar candidates, once each, at most a few.
        scored = {s["sku"]: s for s in state["scored"]}
        chosen = [scored[sku] for sku in dict.fromkeys(state["ranking"]) if sku in scored]
        return {"substitutes": chosen[:MAX_SUBSTITUTES]}

    # LangGraph is imported here, as the graph is built: the processes of the application
    # that never run this agent load its declaration without it (about a second).
    from langgraph.graph import END, START, StateGraph

    graph: StateGraph[SubstituteState] = StateGraph(SubstituteState)
    graph.add_node("gather", gather)
    graph.add_node("recall", recall)
    graph.add_node("decide", decide)
    graph.add_node("guard", guard)
    graph.add_edge(START, "gather")
    graph.add_edge("gather", "recall")
    graph.add_edge("recall", "decide")
    graph.add_edge("decide", "guard")
    graph.add_edge("guard", END)
    return graph


def out_of_stock(event: Event[OrderRejected]) -> bool:
    return str(event.data.reason) == "out_of_stock"


def initial_state(event: Event[OrderRejected]) -> SubstituteState:
    return {"trigger_id": event.id, "order_id": event.data.order_id}


def message(missing: Mapping[str, Any], order_id: str, substitutes: list[dict[str, Any]]) -> str:
    """For customer service, from catalog data only: never from text in the order."""
    offers = "; ".join(
        f"{s['name']} ({s['sku']}, {s['available']} in stock, {s['unit_price']:.2f})"
        for s in substitutes
    )
    return (
        f"Order {order_id} could not get {missing['name']} ({missing['sku']}): "
        f"{missing['requested']} asked, {missing['available']} available. "
        f"In stock instead: {offers}."
    )


def suggest(
    state: SubstituteState, event: Event[OrderRejected], run: Run
) -> SubstituteSuggested | None:
    substitutes, missing = state["substitutes"], state["missing"]
    if not substitutes or not missing:
        return None  # nothing similar in stock: nothing to suggest
    return SubstituteSuggested(
        suggestion_id=run.suggestion_id,
        order_id=event.data.order_id,
        sku=missing["sku"],
        substitutes=[
            Substitute(
                sku=s["sku"], name=s["name"], score=float(s["score"]), available=s["available"]
            )
            for s in substitutes
        ],
        message=message(missing, event.data.order_id, substitutes),
        agent=NAME,
        model=run.model,
        trigger_event_id=event.id,
    )


def declaration() -> Agent[OrderRejected, SubstituteState, SubstituteSuggested]:
    environment = load_environment()
    return Agent(
        name=NAME,
        triggers=("order.rejected",),
        accepts=out_of_stock,
        suggestion_type="substitute.suggested",
        build_graph=build_graph,
        initial_state=initial_state,
        suggest=suggest,
        decisions=DECISIONS,
        migrations=MIGRATIONS,
        project=project,
        token_budget_per_hour=environment.substitute_token_budget,
        coalesce_window=environment.substitute_coalesce_seconds,
        description="Finds in-stock substitutes for what an order could not get.",
    )
