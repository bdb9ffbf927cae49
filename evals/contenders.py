"""The policies an eval compares: three classic baselines and the agent with and without memory.

All of them run as the restock agent on the same runtime (one run per trigger,
coalescing, guardrails); only the decision differs, so the report measures the
decision and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentbus.agent import AgentRuntimeOptions, agent_service
from agentbus.llm import Model
from agentbus.memory import embedder_from_env
from agentbus.memory.shared import shared_vector_store
from agentbus.service import Service
from agents.restock import agent as restock
from agents.restock import policy
from agents.restock.proposal import RestockProposal
from tools.forecast import spread, total

ModelFactory = Callable[[], Model | None]

Z_95 = 1.65
REVIEW_DAYS = 7


@dataclass(frozen=True)
class Contender:
    name: str
    description: str
    uses_model: bool
    build: Callable[[ModelFactory], Service]


def fixed_quantity(
    facts: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]], history: Mapping[str, Any]
) -> RestockProposal:
    """Half the shelf, every time: what a busy shop does without a system."""
    trigger = facts["trigger"]
    return RestockProposal(
        quantity=max(1, int(trigger["max_stock"]) // 2),
        urgency="medium",
        rationale="Fixed order of half the max stock.",
        confidence=0.5,
        evidence=[facts["trigger_id"]],
    )


def reorder_point(
    facts: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]], history: Mapping[str, Any]
) -> RestockProposal:
    """The textbook formula over the last four weeks and the catalog's lead time."""
    trigger = facts["trigger"]
    demand = facts["demand"]
    lead = max(int(trigger["lead_time_days"]), 1)
    on_order = sum(int(po["quantity"]) for po in facts["open_purchase_orders"])
    target = float(demand["daily_mean"]) * (lead + REVIEW_DAYS) + Z_95 * float(
        demand["daily_std"]
    ) * math.sqrt(lead)
    quantity = max(1, math.ceil(target - int(trigger["available"]) - on_order))
    return RestockProposal(
        quantity=quantity,
        urgency="medium",
        rationale=f"Order up to {target:.0f}: mean demand over lead time and review, safety stock.",
        confidence=0.5,
        evidence=[facts["trigger_id"]],
    )


def forecaster_only(
    facts: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]], history: Mapping[str, Any]
) -> RestockProposal:
    """The agent's forecaster with a classic order-up-to rule: the baseline to add value over.

    Order up to the forecast's 95% bound over the catalog lead time and a review
    period, and at least up to the reorder point plus the lead time's demand (the
    textbook (s, S) condition, which keeps the SKU above its reorder point when
    the order arrives). No memory, no lost-sales reasoning, no shelf.
    """
    trigger = facts["trigger"]
    forecast = facts["forecast"]
    lead = max(int(trigger["lead_time_days"]), 1)
    on_order = sum(int(po["quantity"]) for po in facts["open_purchase_orders"])
    horizon = lead + REVIEW_DAYS
    upper = total(forecast, horizon) + Z_95 * spread(forecast, horizon)
    target = max(upper, int(trigger["reorder_point"]) + total(forecast, lead))
    quantity = max(1, math.ceil(target - int(trigger["available"]) - on_order))
    return RestockProposal(
        quantity=quantity,
        urgency="medium",
        rationale=f"Order up to {target:.0f}: the forecast's 95% bound over lead time and review.",
        confidence=0.5,
        evidence=[facts["trigger_id"]],
    )


def _agent(
    offline: restock.OfflinePolicy, *, remember: bool, model: ModelFactory | None
) -> Service:
    options = AgentRuntimeOptions(
        model=model if model is not None else (lambda: None),
        memory=lambda env: shared_vector_store(env.settings),
        embedder=embedder_from_env,
    )
    return agent_service(restock.declaration(offline, remember=remember), options)


def _policy(
    facts: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]], history: Mapping[str, Any]
) -> RestockProposal:
    # Looked up at call time, so a test can break the policy and watch the gate catch it.
    return policy.recommend(facts, decisions, history)


CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "fixed",
        "a fixed quantity: half the max stock",
        False,
        lambda model: _agent(fixed_quantity, remember=False, model=None),
    ),
    Contender(
        "reorder_point",
        "the classic reorder-point formula over four weeks and the catalog lead time",
        False,
        lambda model: _agent(reorder_point, remember=False, model=None),
    ),
    Contender(
        "forecaster",
        "the agent's forecaster with a classic order-up-to rule, no memory",
        False,
        lambda model: _agent(forecaster_only, remember=False, model=None),
    ),
    Contender(
        "agent_no_memory",
        "the restock agent with memory switched off",
        True,
        lambda model: _agent(_policy, remember=False, model=model),
    ),
    Contender(
        "agent",
        "the restock agent with its memory",
        True,
        lambda model: _agent(_policy, remember=True, model=model),
    ),
)


POLICY = Contender(
    "policy",
    "the restock agent with its memory and its offline policy, never the model",
    False,
    lambda model: _agent(_policy, remember=True, model=None),
)
"""Beside the agent when a model decides for it: what the model adds over its own policy."""


def contender(name: str) -> Contender:
    for candidate in (*CONTENDERS, POLICY):
        if candidate.name == name:
            return candidate
    raise KeyError(name)
