"""What an agent's graph nodes may use: read-only queries, memory, and the model.

`complete` is the one way to call the model. It spends the agent's token budget,
falls back to the agent's offline policy when the budget is spent or the model
fails (malformed twice, unavailable, no recording), and says which model
decided, so the suggestion can tell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from agentbus.agent import tables
from agentbus.llm import Model, ModelError, ModelRequest
from agentbus.store import Database
from agentbus.telemetry import tracer

T = TypeVar("T")
POLICY = "policy"


@dataclass(frozen=True)
class Decision:
    output: BaseModel
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    fallback_reason: str | None = None

    def accounting(self) -> dict[str, Any]:
        """The state keys the runtime reads after a run (and books with its commit)."""
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "fallback_reason": self.fallback_reason,
        }


@dataclass
class RunContext:
    agent: str
    database: Database
    model: Model | None
    memory: Any = None  # agentbus.memory.VectorStore
    embedder: Any = None  # agentbus.memory.Embedder
    token_budget_per_hour: int | None = None

    async def read(self, query: Callable[[sa.Connection], T]) -> T:
        """A read-only query over the agent's own projection."""
        return await self.database.read(query)

    async def search_memory(
        self, collection: str, text: str, *, limit: int = 5, where: dict[str, Any] | None = None
    ) -> list[Any]:
        if self.memory is None or self.embedder is None:
            return []
        with tracer().start_as_current_span(
            f"retrieve {collection}",
            attributes={"gen_ai.operation.name": "retrieve", "db.collection.name": collection},
        ):
            [vector] = await self.embedder.embed([text])
            try:
                hits: list[Any] = await self.memory.search(
                    collection, vector, limit=limit, where=where
                )
            except KeyError:
                return []  # nothing remembered yet
            return hits

    async def complete(
        self, request: ModelRequest, *, fallback: Callable[[], BaseModel]
    ) -> Decision:
        if self.model is None:
            return Decision(fallback(), POLICY)
        if await self._budget_spent():
            return Decision(fallback(), f"{POLICY} (token budget spent)", fallback_reason="budget")
        model = self.model
        with tracer().start_as_current_span(
            f"chat {model.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": model.provider,
                "gen_ai.request.model": model.name,
                "gen_ai.agent.name": self.agent,
            },
        ) as span:
            try:
                response = await model.complete(request)
            except ModelError as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.set_attribute("error.type", type(exc).__name__)
                reason = type(exc).__name__
                return Decision(
                    fallback(), f"{POLICY} (fallback: {reason})", fallback_reason=reason
                )
            span.set_attribute("gen_ai.response.model", response.model)
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
            if response.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        return Decision(
            response.output,
            response.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        )

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
    tx: Any, input_tokens: int, output_tokens: int, fallbacks: int, hour: str | None = None
) -> None:
    """Add a run's tokens and fallbacks to the agent's hourly usage, in the caller's transaction."""
    hour = hour or _hour()
    insert = tx.insert(tables.usage).values(
        hour=hour, input_tokens=input_tokens, output_tokens=output_tokens, fallbacks=fallbacks
    )
    tx.execute(
        insert.on_conflict_do_update(
            index_elements=[tables.usage.c.hour],
            set_={
                "input_tokens": tables.usage.c.input_tokens + input_tokens,
                "output_tokens": tables.usage.c.output_tokens + output_tokens,
                "fallbacks": tables.usage.c.fallbacks + fallbacks,
            },
        )
    )


def _hour() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H")


def evidence_known(candidates: Sequence[str], known: set[str]) -> list[str]:
    """Keep only evidence ids of events that exist, in order, without repeats."""
    return [i for i in dict.fromkeys(candidates) if i in known]
