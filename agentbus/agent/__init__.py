"""Agents as queue consumers: durable LangGraph runs, one suggestion per trigger.

This package (with `agentbus.envelope`, `agentbus.service`, `agentbus.store`,
`agentbus.llm` and `agentbus.memory`) is the public API agents are written
against: modules under `agents/` import nothing else from the platform.
"""

from agentbus.agent.accounting import Accounting, Run
from agentbus.agent.context import Decision, RunContext, evidence_known
from agentbus.agent.prompts import Prompt, quote
from agentbus.agent.queries import known_event_ids, past_decisions
from agentbus.agent.runtime import Agent, AgentRuntimeOptions, agent_service, read_suggestions
from agentbus.decisions import DecisionInvalid, Decisions

__all__ = [
    "Accounting",
    "Agent",
    "AgentRuntimeOptions",
    "Decision",
    "DecisionInvalid",
    "Decisions",
    "Prompt",
    "Run",
    "RunContext",
    "agent_service",
    "evidence_known",
    "known_event_ids",
    "past_decisions",
    "quote",
    "read_suggestions",
]
