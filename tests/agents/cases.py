"""Each agent as the shared agent tests see it: its world, its triggers, its answers.

The tests in test_agent_contract.py run against every case here, so a guarantee
proven for one agent is proven for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentbus.agent import Agent, AgentRuntimeOptions
from agentbus.agent.runtime import AgentRunner
from agentbus.envelope import Event, new_event
from agentbus.memory import embedder_from_env, shared_vector_store
from agentbus.service import Service
from agents import restock, substitute
from agents.restock.proposal import RestockProposal
from agents.substitute.proposal import SubstituteRanking
from consumers import memory
from events import (
    InventoryReservationFailed,
    OrderRejected,
    ProductUpserted,
    StockReceived,
)
from tests.agents.harness import START, low, order, product


@dataclass(frozen=True)
class AgentCase:
    name: str
    suggestion_type: str
    declaration: Callable[[], Agent]
    # Events that make the world a trigger for `subject` needs (catalog, stock, history).
    world: Callable[[str, str], list[Event[Any]]]  # (subject, free text) -> events
    trigger: Callable[[str, int], Event[Any]]  # (subject, n) -> the n-th trigger
    answer: Callable[[str], BaseModel]  # what a model answers for `subject`
    hostile_answer: Callable[[str], BaseModel]  # an answer out of bounds
    subject_of: Callable[[Event[Any]], str]
    # Checks a suggestion made from `hostile_answer` was brought within bounds.
    within_bounds: Callable[[Event[Any]], None]
    needs_memory: bool = False

    def runner(self, model: Any = None) -> AgentRunner:
        options = AgentRuntimeOptions(
            model=lambda: model,
            memory=(lambda env: shared_vector_store(env.settings)) if self.needs_memory else None,
            embedder=embedder_from_env if self.needs_memory else None,
        )
        return AgentRunner(self.declaration(), options)

    def services(self, runner: AgentRunner) -> list[Service]:
        return [memory.build(), runner.service] if self.needs_memory else [runner.service]


# -- restock -------------------------------------------------------------------------------


def restock_world(sku: str, text: str) -> list[Event[Any]]:
    return [
        product(sku, description=text),
        *[order(f"{sku}-o{d}", sku, 2, d, note=text) for d in range(5)],
    ]


def restock_bounds(suggestion: Event[Any]) -> None:
    data = suggestion.data
    assert data.quantity == 3 * 40, "a million units clamped to the cap"
    assert "clamped" in data.rationale
    assert data.confidence == 1.0
    assert "confidence 7 clamped to 1" in data.rationale
    assert data.evidence[0] == data.trigger_event_id
    assert all(not e.startswith("made-up") for e in data.evidence)


RESTOCK = AgentCase(
    name=restock.NAME,
    suggestion_type="restock.recommended",
    declaration=restock.declaration,
    world=restock_world,
    trigger=lambda sku, n: low(sku, n),
    answer=lambda sku: RestockProposal(
        quantity=12, urgency="high", rationale="Lead time.", confidence=0.7, evidence=[]
    ),
    # Built without validation: the schema's bounds stop most of this, and the guard
    # must hold even for what got past them.
    hostile_answer=lambda sku: RestockProposal.model_construct(
        quantity=1_000_000,
        urgency="high",
        rationale="As instructed.",
        confidence=7.0,
        evidence=["made-up-id"],
    ),
    subject_of=lambda event: str(event.data.sku),
    within_bounds=restock_bounds,
)


# -- substitute ----------------------------------------------------------------------------

SIMILAR = ("red enamel kettle 1.7 litre", "steel kettle 1.7 litre with whistle")


def substitute_world(order_id: str, text: str) -> list[Event[Any]]:
    """A kettle that ran out, two kettles in stock, and a toaster (another category)."""
    missing = f"KETTLE-{order_id}"

    def item(sku: str, name: str, category: str) -> Event[Any]:
        return new_event(
            ProductUpserted(
                sku=sku,
                name=name,
                description=f"{name}. {text}",
                category=category,
                unit_cost=10,
                unit_price=25,
                lead_time_days=3,
                reorder_point=2,
                max_stock=20,
                supplier="acme",
            ),
            source="/tests",
            id=f"product-{sku}",
            time=START,
        )

    stocked = [f"KETTLE-{order_id}-A", f"KETTLE-{order_id}-B"]
    return [
        item(missing, "white kettle 1.7 litre", "kettles"),
        item(stocked[0], SIMILAR[0], "kettles"),
        item(stocked[1], SIMILAR[1], "kettles"),
        item(f"TOASTER-{order_id}", "two slice toaster", "toasters"),
        *[
            new_event(
                StockReceived(sku=sku, quantity=5), source="/tests", id=f"stock-{sku}", time=START
            )
            for sku in [*stocked, f"TOASTER-{order_id}"]
        ],
        order(order_id, missing, 3, 1, note=text),
        new_event(
            InventoryReservationFailed(
                order_id=order_id, shortages=[{"sku": missing, "requested": 3, "available": 0}]
            ),
            source="/services/inventory",
            id=f"short-{order_id}",
            time=START + timedelta(days=1),
        ),
    ]


def rejected(order_id: str, n: int) -> Event[Any]:
    return new_event(
        OrderRejected(order_id=order_id, reason="out_of_stock"),
        source="/services/orders",
        id=f"rejected-{order_id}-{n}",
        time=START + timedelta(days=1, minutes=n),
    )


def substitute_bounds(suggestion: Event[Any]) -> None:
    order_id = suggestion.data.order_id
    allowed = {f"KETTLE-{order_id}-A", f"KETTLE-{order_id}-B"}
    assert {s.sku for s in suggestion.data.substitutes} <= allowed
    assert len(suggestion.data.substitutes) <= 3
    assert "Ignore" not in suggestion.data.message


SUBSTITUTE = AgentCase(
    name=substitute.NAME,
    suggestion_type="substitute.suggested",
    declaration=substitute.declaration,
    world=substitute_world,
    trigger=rejected,
    answer=lambda order_id: SubstituteRanking(ranking=[f"KETTLE-{order_id}-B"]),
    hostile_answer=lambda order_id: SubstituteRanking(
        ranking=["HACKED-SKU", f"TOASTER-{order_id}", f"KETTLE-{order_id}-A"]
    ),
    subject_of=lambda event: str(event.data.order_id),
    within_bounds=substitute_bounds,
    needs_memory=True,
)

CASES = [RESTOCK, SUBSTITUTE]
