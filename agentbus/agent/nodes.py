"""A span per graph node, and the node's model calls checkpointed with its result,
without asking agent authors to decorate their nodes.

LangGraph keeps each node's coroutine function on the node's runnable (`afunc`)
and calls it with the arguments it decided to inject when the node was added.
Swapping in a wrapper of the same call keeps that injection and costs one extra
frame per node, far less than a callback handler would.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind

from agentbus.agent import accounting
from agentbus.telemetry import tracer


def trace_nodes(graph: Any, agent: str) -> list[str]:
    """Wrap every async node of an uncompiled StateGraph; return their names.

    The graph gains the runtime's accounting channel (`agentbus.agent.accounting`),
    which the wrapped nodes write.
    """
    if accounting.CHANNEL not in graph.channels:
        # How `add_node(..., input_schema=...)` gives a node private state: LangGraph's
        # one way to add a channel the graph's state schema does not declare.
        graph._add_schema(accounting.ChannelSchema)
    traced: list[str] = []
    for name, spec in graph.nodes.items():
        runnable = spec.runnable
        call = getattr(runnable, "afunc", None)
        if call is None or getattr(call, "_agentbus_node", False):
            continue
        runnable.afunc = _traced(call, agent, name)
        traced.append(name)
    return traced


def _traced(
    call: Callable[..., Awaitable[Any]], agent: str, node: str
) -> Callable[..., Awaitable[Any]]:
    attributes = {"gen_ai.agent.name": agent, "agentbus.agent.node": node}
    span_name = f"node {node}"

    @functools.wraps(call)
    async def run(*args: Any, **kwargs: Any) -> Any:
        calls, token = accounting.start_node()
        try:
            with tracer().start_as_current_span(
                span_name, kind=SpanKind.INTERNAL, attributes=attributes
            ):
                update = await call(*args, **kwargs)
        finally:
            accounting.end_node(token)
        return accounting.with_calls(update, calls) if calls else update

    run._agentbus_node = True  # type: ignore[attr-defined]
    return run
