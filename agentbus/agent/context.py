"""What an agent's graph nodes may use: read-only tools, memory, and the model.

`complete` is the one way to call the model. It spends the agent's token budget,
falls back to the agent's offline policy when the budget is spent or the model
fails (malformed twice, unavailable, no recording), and says which model
decided, so the suggestion can tell. Each call is a `chat` span with token usage
and cost, and feeds the model metrics; prompt and completion text go on the span
only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, StatusCode
from pydantic import BaseModel

from agentbus.agent import tables
from agentbus.agent.accounting import POLICY, record
from agentbus.llm import Model, ModelError, ModelRequest, ModelResponse
from agentbus.llm.pricing import price
from agentbus.memory.base import Embedder, Hit, VectorStore, Where
from agentbus.metrics import instruments
from agentbus.store import Database, Transaction
from agentbus.telemetry import tracer

log = logging.getLogger(__name__)

T = TypeVar("T")
COST_ATTRIBUTE = "agentbus.gen_ai.usage.cost_usd"


@dataclass(frozen=True)
class Decision:
    """What `complete` answers. The runtime has its accounting already: a node returns
    only what its state declares, and `suggest` reads the model from its `Run`."""

    output: BaseModel
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    fallback_reason: str | None = None


@dataclass
class RunContext:
    agent: str
    database: Database
    model: Model | None
    memory: VectorStore | None = None
    embedder: Embedder | None = None
    token_budget_per_hour: int | None = None
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """`AGENTBUS_MODEL_PRICES`, read at start: wins over the maintained table."""
    capture_content: bool = False
    """`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: prompts and answers on spans."""

    async def read(self, query: Callable[[sa.Connection], T]) -> T:
        """A read-only query over the agent's own projection."""
        return await self.database.read(query)

    async def tools(self, calls: Mapping[str, Callable[[sa.Connection], Any]]) -> dict[str, Any]:
        """Run read-only tools in one read, each in its own `execute_tool` span.

        One hop to the database thread for all of them; the spans are made there,
        under the node that asked.
        """
        parent = otel_context.get_current()
        agent = self.agent

        def read(connection: sa.Connection) -> dict[str, Any]:
            results: dict[str, Any] = {}
            for name, call in calls.items():
                with tracer().start_as_current_span(
                    f"execute_tool {name}",
                    context=parent,
                    kind=SpanKind.INTERNAL,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": name,
                        "gen_ai.tool.type": "datastore",
                        "gen_ai.agent.name": agent,
                    },
                ):
                    results[name] = call(connection)
            return results

        return await self.database.read(read)

    async def search_memory(
        self, collection: str, text: str, *, limit: int = 5, where: Where | None = None
    ) -> list[Hit]:
        if self.memory is None or self.embedder is None:
            return []
        with tracer().start_as_current_span(
            f"retrieval {collection}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": collection,
                "gen_ai.agent.name": self.agent,
            },
        ):
            [vector] = await self.embedder.embed_queries([text])
            try:
                return await self.memory.search(collection, vector, limit=limit, where=where)
            except KeyError:
                return []  # nothing remembered yet

    async def complete(
        self, request: ModelRequest, *, fallback: Callable[[], BaseModel]
    ) -> Decision:
        """The model's answer, or the fallback's; recorded in the run's accounting."""
        decision = await self._decide(request, fallback)
        record(
            decision.model,
            decision.input_tokens,
            decision.output_tokens,
            fell_back=decision.fallback_reason is not None,
        )
        return decision

    async def _decide(self, request: ModelRequest, fallback: Callable[[], BaseModel]) -> Decision:
        if self.model is None:
            return Decision(fallback(), POLICY)
        meters = instruments()
        if await self._budget_spent():
            meters.fallbacks.add(1, {"gen_ai.agent.name": self.agent, "reason": "budget"})
            return Decision(fallback(), f"{POLICY} (token budget spent)", fallback_reason="budget")
        model = self.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.name,
        }
        started = time.perf_counter()
        with tracer().start_as_current_span(
            f"chat {model.name}",
            kind=SpanKind.CLIENT,
            attributes={**attributes, "gen_ai.agent.name": self.agent},
        ) as span:
            if self.capture_content:
                span.set_attribute("gen_ai.input.messages", _messages_json(request))
            try:
                response = await model.complete(request)
            except ModelError as exc:
                reason = type(exc).__name__
                span.set_status(StatusCode.ERROR, reason)
                span.set_attribute("error.type", reason)
                failed = {**attributes, "error.type": reason}
                meters.model_duration.record(time.perf_counter() - started, failed)
                meters.model_calls.add(
                    1, {"gen_ai.agent.name": self.agent, **failed, "outcome": "error"}
                )
                meters.fallbacks.add(1, {"gen_ai.agent.name": self.agent, "reason": reason})
                # The span and the metric name the kind; an operator also wants the detail
                # (what the model answered wrong, which limit it hit).
                log.warning("%s: %s failed, the policy decides: %s", self.agent, model.name, exc)
                return Decision(
                    fallback(), f"{POLICY} (fallback: {reason})", fallback_reason=reason
                )
            self._account(span, attributes, response, time.perf_counter() - started)
        return Decision(
            response.output,
            response.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        )

    def _account(
        self, span: Span, attributes: dict[str, Any], response: ModelResponse, elapsed: float
    ) -> None:
        """Token usage and cost, on the span and in the metrics."""
        usage = response.usage
        cost = price(
            response.model,
            usage.input_tokens,
            usage.output_tokens,
            response.provider,
            self.prices,
        )
        span.set_attribute("gen_ai.response.model", response.model)
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        span.set_attribute(COST_ATTRIBUTE, cost)
        if response.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        if self.capture_content:
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {"type": "text", "content": response.output.model_dump_json()}
                            ],
                            "finish_reason": response.finish_reason or "stop",
                        }
                    ]
                ),
            )
        meters = instruments()
        answered = {**attributes, "gen_ai.response.model": response.model}
        meters.model_duration.record(elapsed, answered)
        meters.token_usage.record(usage.input_tokens, {**answered, "gen_ai.token.type": "input"})
        meters.token_usage.record(usage.output_tokens, {**answered, "gen_ai.token.type": "output"})
        per_agent = {"gen_ai.agent.name": self.agent, "gen_ai.response.model": response.model}
        meters.model_calls.add(1, {**per_agent, "outcome": "answered"})
        meters.model_cost.add(cost, per_agent)

    async def _budget_spent(self) -> bool:
        if self.token_budget_per_hour is None:
            return False
        hour = _hour()

        def spent(connection: sa.Connection) -> int:
            row = connection.execute(
                sa.select(tables.usage).where(tables.usage.c.hour == hour)
            ).first()
            return 0 if row is None else int(row.input_tokens + row.output_tokens)

        return await self.database.read(spent) >= self.token_budget_per_hour


def book_usage(
    tx: Transaction, input_tokens: int, output_tokens: int, fallbacks: int, hour: str | None = None
) -> None:
    """Add a run's tokens and fallbacks to the agent's hourly usage, in the caller's transaction."""
    tx.execute(
        tx.once(_add_usage, _add_usage),
        {
            "hour": hour or _hour(),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "fallbacks": fallbacks,
        },
    )


def _add_usage(tx: Transaction) -> Any:
    usage = tables.usage
    insert = tx.insert(usage)
    return insert.on_conflict_do_update(
        index_elements=[usage.c.hour],
        set_={
            "input_tokens": usage.c.input_tokens + insert.excluded.input_tokens,
            "output_tokens": usage.c.output_tokens + insert.excluded.output_tokens,
            "fallbacks": usage.c.fallbacks + insert.excluded.fallbacks,
        },
    )


def _messages_json(request: ModelRequest) -> str:
    return json.dumps(
        [
            {"role": message.role, "parts": [{"type": "text", "content": message.content}]}
            for message in request.messages
        ]
    )


def _hour() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H")


def evidence_known(candidates: Sequence[str], known: set[str]) -> list[str]:
    """Keep only evidence ids of events that exist, in order, without repeats."""
    return [i for i in dict.fromkeys(candidates) if i in known]
