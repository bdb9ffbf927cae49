"""A run's accounting (which model decided, tokens, fallbacks), kept out of the agent's state.

`RunContext.complete` records each model call into the node that is running; the
runtime's node wrapper (`agentbus.agent.nodes`) hands what the node recorded to
LangGraph with the node's own update, in a channel of the runtime's that the
agent's state type never declares. So the accounting is checkpointed in the same
write as the node's result: a run resumed after a crash replays the completed
nodes' accounting from the checkpoint and records only the nodes it runs again,
never a model call twice, nor one whose answer was lost with the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypedDict

__all__ = ["CHANNEL", "POLICY", "Accounting", "Run"]

POLICY = "policy"
CHANNEL: Final = "agentbus.accounting"
"""The runtime's channel in every agent graph; a dotted name no state key can take."""


@dataclass(frozen=True)
class Accounting:
    """What a run's model calls came to: tokens and fallbacks summed over its calls,
    and the model of the last call, the one whose answer the run went on with."""

    model: str = POLICY
    input_tokens: int = 0
    output_tokens: int = 0
    fallbacks: int = 0

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Accounting:
        """From the channel's checkpointed value (absent: no model call was made)."""
        if not value:
            return cls()
        return cls(
            model=str(value.get("model") or POLICY),
            input_tokens=int(value.get("input_tokens") or 0),
            output_tokens=int(value.get("output_tokens") or 0),
            fallbacks=int(value.get("fallbacks") or 0),
        )


@dataclass(frozen=True)
class Run:
    """What `suggest` gets besides the final state: the suggestion's id, derived from
    the agent and the trigger, and the run's accounting."""

    suggestion_id: str
    accounting: Accounting

    @property
    def model(self) -> str:
        """Which model decided, as a suggestion names it (`policy ...` when the policy did)."""
        return self.accounting.model


# Checkpointed as plain values: LangGraph's serializer needs no class of ours to read them.
def _merge(before: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": delta.get("model") or before.get("model") or POLICY,
        "input_tokens": int(before.get("input_tokens", 0)) + int(delta.get("input_tokens", 0)),
        "output_tokens": int(before.get("output_tokens", 0)) + int(delta.get("output_tokens", 0)),
        "fallbacks": int(before.get("fallbacks", 0)) + int(delta.get("fallbacks", 0)),
    }


ChannelSchema = TypedDict(
    "ChannelSchema", {"agentbus.accounting": Annotated[dict[str, Any], _merge]}, total=False
)
"""Added to every agent graph by the runtime (see `agentbus.agent.nodes`)."""


Call = tuple[str, int, int, bool]
"""One model call: the model (or the policy) that decided, input and output tokens, fell back."""

_node_calls: ContextVar[list[Call] | None] = ContextVar("agentbus_node_calls", default=None)


def record(model: str, input_tokens: int, output_tokens: int, *, fell_back: bool) -> None:
    """A model call (or the policy deciding instead) of the node running now."""
    calls = _node_calls.get()
    if calls is not None:
        calls.append((model, input_tokens, output_tokens, fell_back))


def start_node() -> tuple[list[Call], Token[list[Call] | None]]:
    """Where the calls of the node starting now are recorded, until `end_node`."""
    calls: list[Call] = []
    return calls, _node_calls.set(calls)


def end_node(token: Token[list[Call] | None]) -> None:
    _node_calls.reset(token)


def with_calls(update: Any, calls: Sequence[Call]) -> Any:
    """The node's update, carrying its calls' accounting into the runtime's channel."""
    delta = {
        "model": calls[-1][0],
        "input_tokens": sum(call[1] for call in calls),
        "output_tokens": sum(call[2] for call in calls),
        "fallbacks": sum(1 for call in calls if call[3]),
    }
    if update is None:
        return {CHANNEL: delta}
    if isinstance(update, dict):
        return {**update, CHANNEL: delta}
    # A model instance, a Command or a list of them: LangGraph applies a list's items in turn.
    # (Imported here, where a graph already runs: LangGraph is not loaded by processes that
    # only name agents.)
    from langgraph.types import Command

    return [*(update if isinstance(update, list) else [update]), Command(update={CHANNEL: delta})]
