"""The agents as services, with the runtime options of a deployment."""

from __future__ import annotations

from agentbus.agent import AgentRuntimeOptions, agent_service
from agentbus.memory import embedder_from_env, shared_vector_store
from agentbus.service import Service
from agents import restock, substitute

OPTIONS = AgentRuntimeOptions(
    memory=lambda env: shared_vector_store(env.settings),
    embedder=embedder_from_env,
)


def restock_agent() -> Service:
    return agent_service(restock.declaration(), OPTIONS)


def substitute_agent() -> Service:
    return agent_service(substitute.declaration(), OPTIONS)
