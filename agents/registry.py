"""The agents as services, with the runtime options of a deployment."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from agentbus.agent import AgentRuntimeOptions, Decisions, agent_service
from agentbus.memory import embedder_from_env, shared_vector_store
from agentbus.service import Service
from agents import restock, substitute
from agents.restock.decisions import DECISIONS as RESTOCK_DECISIONS
from agents.substitute.decisions import DECISIONS as SUBSTITUTE_DECISIONS

OPTIONS = AgentRuntimeOptions(
    memory=lambda env: shared_vector_store(env.settings.data_dir),
    embedder=embedder_from_env,
)

# How every agent's suggestions are decided, by the suggestion's event type: what
# reviewing tools (the console, the HTTP API) go by.
DECISIONS: Mapping[str, Decisions] = MappingProxyType(
    {d.suggestion_type: d for d in (RESTOCK_DECISIONS, SUBSTITUTE_DECISIONS)}
)


def restock_agent() -> Service:
    return agent_service(restock.declaration(), OPTIONS)


def substitute_agent() -> Service:
    return agent_service(substitute.declaration(), OPTIONS)
