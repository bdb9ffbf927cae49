"""Agents as queue consumers: durable LangGraph runs, one suggestion per trigger."""

from agentbus.agent.context import Decision, RunContext, evidence_known
from agentbus.agent.prompts import Prompt, quote
from agentbus.agent.runtime import Agent, AgentRuntimeOptions, agent_service, read_suggestions

__all__ = [
    "Agent",
    "AgentRuntimeOptions",
    "Decision",
    "Prompt",
    "RunContext",
    "agent_service",
    "evidence_known",
    "quote",
    "read_suggestions",
]
