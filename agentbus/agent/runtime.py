"""Agents as queue consumers: one durable, exactly-once run per (agent, trigger).

A trigger goes through three steps. Plan, in one transaction: a trigger already
done is skipped; a trigger for a subject whose suggestion awaits review (or
that ran within the coalescing window) is kept as evidence and starts nothing.
Run, outside any transaction: the LangGraph graph, checkpointed per run, so a
process killed mid-run resumes on redelivery without repeating completed nodes
(model calls included). Commit, in one transaction: the trigger's inbox row,
the run's outcome, and the suggestion in the outbox under an id derived from
the agent and the trigger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa
from opentelemetry.trace import Span, SpanKind, StatusCode
from pydantic import BaseModel

from agentbus.agent import tables
from agentbus.agent.accounting import CHANNEL, POLICY, Accounting, Run
from agentbus.agent.checkpoints import Checkpoints
from agentbus.agent.context import RunContext, book_usage
from agentbus.agent.nodes import trace_nodes
from agentbus.conventions import invoke_agent_attributes
from agentbus.decisions import Decisions
from agentbus.envelope import Event
from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError, TransientError
from agentbus.llm import Model
from agentbus.llm.pricing import price_table
from agentbus.memory.base import Embedder, VectorStore
from agentbus.metrics import instruments
from agentbus.service import Context, Service, ServiceEnv
from agentbus.settings import ModelSettings
from agentbus.store import Migration, StoreBinding, Transaction
from agentbus.telemetry import tracer

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from langgraph.typing import StateT
else:
    # LangGraph is imported where a graph is built, not where an agent is declared: it
    # takes about a second to import, and an application's other processes (a service,
    # a CLI command) load every agent's declaration. mypy checks against LangGraph's own.
    StateT = TypeVar("StateT")

log = logging.getLogger(__name__)

TriggerT = TypeVar("TriggerT", bound=BaseModel)
SuggestionT = TypeVar("SuggestionT", bound=BaseModel)


@dataclass
class Agent(Generic[TriggerT, StateT, SuggestionT]):
    """What an application declares; `agent_service` turns it into a service.

    Generic over the trigger's data (a union when it has several types), the graph's
    state (a TypedDict, a dataclass or a pydantic model) and the suggestion, so that
    mypy checks the functions below against one another. The state holds only what
    the agent decides: the runtime keeps the run's accounting (`Run.accounting`).
    """

    name: str
    triggers: tuple[str, ...]
    suggestion_type: str
    build_graph: Callable[[RunContext], StateGraph[StateT]]  # uncompiled
    initial_state: Callable[[Event[TriggerT]], StateT]
    # The suggestion from the final state; None when the run found nothing to suggest.
    suggest: Callable[[StateT, Event[TriggerT], Run], SuggestionT | None]
    # Which trigger events start a run; the others are recorded as seen and skipped.
    accepts: Callable[[Event[TriggerT]], bool] | None = None
    # Decision events that close a suggestion awaiting review: type -> field with its id.
    closes: Mapping[str, str] = field(default_factory=dict)
    # What approving and rejecting a suggestion emit; its two events close it too.
    decisions: Decisions | None = None
    migrations: Sequence[Migration] = ()
    project: Callable[[StoreBinding], None] | None = None
    coalesce_window: float = 0.0
    token_budget_per_hour: int | None = None
    run_timeout: float = 120.0
    concurrency: int = 64  # lanes: subjects hash onto them, so more than the runs wanted
    description: str = ""
    extra_publishes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentRuntimeOptions:
    """How the runtime gets its model, memory and embedder (from the environment by default)."""

    model: Callable[[], Model | None] | None = None  # a None model: the offline policy
    memory: Callable[[ServiceEnv], VectorStore | None] | None = None
    embedder: Callable[[], Embedder | None] | None = None


class AgentRunner(Generic[TriggerT, StateT, SuggestionT]):
    def __init__(
        self, agent: Agent[TriggerT, StateT, SuggestionT], options: AgentRuntimeOptions
    ) -> None:
        self.agent = agent
        self.options = options
        self.service = Service(
            agent.name,
            description=agent.description or f"agent {agent.name}",
            publishes=(agent.suggestion_type, *agent.extra_publishes),
            concurrency=agent.concurrency,
        )
        self.store = StoreBinding(self.service, (*tables.MIGRATIONS, *agent.migrations))
        self.checkpoints = Checkpoints(agent.name)
        self.context: RunContext | None = None
        self._graph: Any = None  # a compiled graph: LangGraph types its calls' answers Any
        self._output_keys: list[str] = []
        self._as_state: Callable[[dict[str, Any]], StateT] = _state_maker(None)
        self._run_timeout = agent.run_timeout
        self.runs_started = 0
        if agent.project is not None:
            agent.project(self.store)
        closes = dict(agent.closes)
        approvals = {t for t in closes if t.endswith(".approved")}
        if agent.decisions is not None:
            approved, rejected = agent.decisions.event_types
            closes[approved] = closes[rejected] = agent.decisions.id_field
            approvals.add(approved)
        for event_type, id_field in closes.items():
            self.store.applies(event_type)(self._closer(id_field, event_type in approvals))
        self.service.handles(*agent.triggers)(self._on_trigger)
        self.service.on_startup(self._start)
        self.service.on_shutdown(self._stop)

    # -- life cycle ----------------------------------------------------------------------

    async def _start(self, env: ServiceEnv) -> None:
        from agentbus.agent.models import model_from_env

        environment = load_environment()
        run_timeout = ModelSettings.of(environment).agent_run_timeout
        self._run_timeout = run_timeout or self.agent.run_timeout
        model = self.options.model() if self.options.model else model_from_env()
        memory = self.options.memory(env) if self.options.memory else None
        embedder = self.options.embedder() if self.options.embedder else None
        self.context = RunContext(
            agent=self.agent.name,
            database=self.store.database,
            model=model,
            memory=memory,
            embedder=embedder,
            token_budget_per_hour=self.agent.token_budget_per_hour,
            prices=price_table(environment),
            capture_content=environment.otel_capture_message_content,
        )
        saver = await self.checkpoints.open(env.settings)
        graph = self.agent.build_graph(self.context)
        trace_nodes(graph, self.agent.name)
        self._graph = graph.compile(checkpointer=saver)
        output = self._graph.output_channels
        if not isinstance(output, list):
            raise ConfigurationError(
                f"the state of {self.agent.name} must be a TypedDict, a dataclass or a model"
            )
        # Each answer also carries the accounting channel, which the state's keys do not name.
        self._output_keys = [*output, CHANNEL]
        self._as_state = _state_maker(graph.state_schema)

    async def _stop(self) -> None:
        # The vector store is shared in the process (see agentbus.memory.shared): not ours to close.
        await self.checkpoints.close()

    # -- triggers ------------------------------------------------------------------------

    async def _on_trigger(self, event: Event[Any], ctx: Context) -> None:
        database = self.store.database
        meters = instruments()
        if self.agent.accepts is not None and not self.agent.accepts(event):
            await database.run(lambda tx: tx.claim(self.agent.name, [event.id]))
            meters.agent_runs.add(1, {"gen_ai.agent.name": self.agent.name, "outcome": "ignored"})
            return
        plan = await database.run(lambda tx: self._plan(tx, event))
        if plan not in ("run", "resume"):
            outcome = "duplicate" if plan == "done" else plan
            meters.agent_runs.add(1, {"gen_ai.agent.name": self.agent.name, "outcome": outcome})
            return
        self.runs_started += 1
        thread_id = f"{self.agent.name}:{event.id}"
        model = self.context.model if self.context is not None else None
        name, attributes = invoke_agent_attributes(self.agent.name, thread_id, model)
        # In process: INTERNAL, as the GenAI conventions allow for agents run locally.
        with tracer().start_as_current_span(
            name, kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            try:
                finished = await asyncio.wait_for(
                    self._run(event, thread_id, span, fresh=plan == "run"),
                    self._run_timeout,
                )
            except TimeoutError:
                span.set_attribute("error.type", "run_timeout")
                span.set_status(StatusCode.ERROR, "run_timeout")
                # The checkpoint keeps what was done; the retry resumes from there.
                raise TransientError(
                    f"run of {self.agent.name} on {event.id} exceeded {self._run_timeout}s",
                    code="run_timeout",
                ) from None
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            run, data = finished
            _record_usage(span, run.accounting, answered_by_model=model is not None)
            # The suggestion's publish span hangs under this run, not beside it.
            emitted = None if data is None else ctx.emit(data, cause=event, within=span)
            span.set_attribute("agentbus.run.suggested", emitted is not None)
            context = span.get_span_context()
            trace_id = f"{context.trace_id:032x}" if context.is_valid else None
            await database.run(lambda tx: self._commit(tx, event, emitted, run, trace_id))
        ctx.emitted.clear()  # it left through the outbox
        if emitted is not None:
            self.store.relay.wake()
        agent = {"gen_ai.agent.name": self.agent.name}
        if emitted is None:
            meters.agent_runs.add(1, {**agent, "outcome": "nothing_to_suggest"})
            return
        meters.agent_runs.add(1, {**agent, "outcome": "completed"})
        meters.suggestions.add(1, {**agent, "status": "pending"})

    async def _discard(self, thread_id: str, span: Span, why: str) -> None:
        log.warning(
            "%s: checkpoint of %s discarded, the run starts afresh: %s",
            self.agent.name,
            thread_id,
            why,
        )
        span.add_event("agentbus.run.checkpoint_discarded", {"agentbus.reason": why})
        await self.checkpoints.saver.adelete_thread(thread_id)

    async def _run(
        self, event: Event[TriggerT], thread_id: str, span: Span, *, fresh: bool
    ) -> tuple[Run, SuggestionT | None]:
        """The run's accounting and what it suggests. The accounting is as checkpointed:
        a resumed run has that of the nodes done before, from the checkpoint, and adds
        only the calls of the nodes it runs again."""
        config = {"configurable": {"thread_id": thread_id}}
        keys = self._output_keys

        def suggested(result: Any) -> tuple[Run, SuggestionT | None]:
            if not isinstance(result, dict):
                span.set_status(StatusCode.ERROR)
                raise TypeError(f"graph of {self.agent.name} returned {type(result).__name__}")
            accounting = Accounting.of(result.pop(CHANNEL, None))
            run = Run(_suggestion_id(self.agent.name, event.id), accounting)
            return run, self.agent.suggest(self._as_state(result), event, run)

        async def from_the_start() -> tuple[Run, SuggestionT | None]:
            return suggested(
                await self._graph.ainvoke(self.agent.initial_state(event), config, output_keys=keys)
            )

        if fresh:
            # The run's row was written just now, before any checkpoint could be:
            # nothing to resume, so no need to ask the checkpointer.
            return await from_the_start()
        # A checkpoint whose row names a value it does not hold (PostgreSQL keeps values
        # apart from the row) would fail the same way on every delivery, or suggest
        # nothing. Its effects commit only after the run, so starting afresh is safe;
        # it costs the model calls again.
        saved = await self.checkpoints.saver.aget_tuple(config)
        lost = [] if saved is None else _lost_channels(saved.checkpoint, keys)
        if lost:
            await self._discard(thread_id, span, f"no value for {', '.join(lost)}")
        snapshot = await self._graph.aget_state(config)
        if snapshot.created_at is None:
            return await from_the_start()
        try:
            # `tasks`, not `next`: `next` leaves out a task whose writes are saved while
            # the checkpoint after it is not (saved in the background, lost with the
            # process or the database), so a run stopped there would read as finished.
            if snapshot.tasks:
                span.set_attribute("agentbus.run.resumed", True)
                return suggested(await self._graph.ainvoke(None, config, output_keys=keys))
            span.set_attribute("agentbus.run.reused", True)
            return suggested(snapshot.values)  # every channel, the accounting's included
        except Exception as exc:
            if _outside_the_graph(exc, self.checkpoints.driver_errors):
                raise  # kept: the retry resumes from the same checkpoint
            # A checkpoint the run cannot go on from (one an earlier version of the
            # agent wrote, whose state lacks what this one reads, say) would fail the
            # same way on every delivery until the trigger is dead-lettered. One run
            # afresh; a second failure is the agent's own.
            await self._discard(thread_id, span, f"going on from it failed: {exc!r}")
            return await from_the_start()

    def _plan(self, tx: Transaction, event: Event[Any]) -> str:
        connection = tx.connection
        now = datetime.now(UTC)
        row = connection.execute(_RUN_STATUS, {"trigger": event.id}).first()
        if row is not None:
            return "resume" if row.status == "started" else "done"
        subject = event.key
        into = self._coalesce_target(connection, subject, now, event.id)
        if into is not None:
            if not tx.claim(self.agent.name, [event.id]):
                return "done"
            connection.execute(
                _INSERT_COALESCED,
                {"trigger_id": event.id, "subject": subject, "into_suggestion": into, "at": now},
            )
            connection.execute(
                _INSERT_RUN,
                {
                    "trigger_id": event.id,
                    "subject": subject,
                    "status": "coalesced",
                    "suggestion_id": into,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "started_at": now,
                },
            )
            return "coalesced"
        connection.execute(
            _INSERT_RUN,
            {
                "trigger_id": event.id,
                "subject": subject,
                "status": "started",
                "suggestion_id": None,
                "input_tokens": 0,
                "output_tokens": 0,
                "started_at": now,
            },
        )
        return "run"

    def _coalesce_target(
        self, connection: sa.Connection, subject: str, now: datetime, trigger_id: str
    ) -> str | None:
        open_row = connection.execute(_OPEN_SUGGESTION, {"subject": subject}).first()
        if open_row is not None:
            return str(open_row.suggestion_id)
        running = connection.execute(_RUNNING, {"subject": subject, "trigger": trigger_id}).first()
        if running is not None:
            return _suggestion_id(self.agent.name, running.trigger_id)
        if self.agent.coalesce_window > 0:
            since = now - timedelta(seconds=self.agent.coalesce_window)
            recent = connection.execute(
                sa.select(tables.runs.c.suggestion_id).where(
                    tables.runs.c.subject == subject,
                    tables.runs.c.status == "completed",
                    tables.runs.c.suggestion_id.is_not(None),
                    tables.runs.c.finished_at >= since,
                )
            ).first()
            if recent is not None:
                return str(recent.suggestion_id)
        return None

    def _commit(
        self,
        tx: Transaction,
        event: Event[Any],
        suggestion: Event[Any] | None,
        run: Run,
        trace_id: str | None,
    ) -> None:
        connection = tx.connection
        now = datetime.now(UTC)
        if not tx.claim(self.agent.name, [event.id]):
            return  # another instance committed this run first
        suggestion_id = run.suggestion_id
        used = run.accounting
        connection.execute(
            _COMPLETE_RUN,
            {
                "trigger": event.id,
                "status": "completed",
                "suggestion_id": suggestion_id if suggestion is not None else None,
                "model": used.model,
                "input_tokens": used.input_tokens,
                "output_tokens": used.output_tokens,
                "finished_at": now,
            },
        )
        if used.input_tokens or used.output_tokens or used.fallbacks:
            book_usage(tx, used.input_tokens, used.output_tokens, used.fallbacks)
        if suggestion is None:
            return
        connection.execute(
            tx.once(_insert_suggestion, _insert_suggestion),
            {
                "suggestion_id": suggestion_id,
                "event_id": suggestion.id,
                "subject": event.key,
                "type": suggestion.type,
                "data": suggestion.data.model_dump(mode="json"),
                "trace_id": trace_id,
                "status": "pending",
                "created_at": now,
            },
        )
        connection.execute(
            tx.once(_open_suggestion, _open_suggestion),
            {"subject": event.key, "suggestion_id": suggestion_id, "opened_at": now},
        )
        tx.stage([suggestion])

    def _closer(
        self, id_field: str, approves: bool
    ) -> Callable[[Transaction, Event[Any], Context], None]:
        agent = self.agent.name
        status = "approved" if approves else "rejected"

        def close(tx: Transaction, event: Event[Any], ctx: Context) -> None:
            suggestion_id = getattr(event.data, id_field)
            instruments().suggestions.add(1, {"gen_ai.agent.name": agent, "status": status})
            tx.execute(
                sa.update(tables.suggestions)
                .where(tables.suggestions.c.suggestion_id == suggestion_id)
                .values(status=status, decision=event.data.model_dump(mode="json"))
            )
            tx.execute(
                sa.delete(tables.open_suggestions).where(
                    tables.open_suggestions.c.suggestion_id == suggestion_id
                )
            )

        return close


# Statements of every trigger, built once (building one costs more than running it).
_RUN_STATUS = sa.select(tables.runs.c.status).where(
    tables.runs.c.trigger_id == sa.bindparam("trigger")
)
_OPEN_SUGGESTION = sa.select(tables.open_suggestions.c.suggestion_id).where(
    tables.open_suggestions.c.subject == sa.bindparam("subject")
)
_RUNNING = sa.select(tables.runs.c.trigger_id).where(
    tables.runs.c.subject == sa.bindparam("subject"),
    tables.runs.c.status == "started",
    tables.runs.c.trigger_id != sa.bindparam("trigger"),
)
_INSERT_RUN = sa.insert(tables.runs)
_INSERT_COALESCED = sa.insert(tables.coalesced)
_COMPLETE_RUN = sa.update(tables.runs).where(tables.runs.c.trigger_id == sa.bindparam("trigger"))


def _insert_suggestion(tx: Transaction) -> Any:
    return tx.insert(tables.suggestions).on_conflict_do_nothing(
        index_elements=[tables.suggestions.c.suggestion_id]
    )


def _open_suggestion(tx: Transaction) -> Any:
    return tx.insert(tables.open_suggestions).on_conflict_do_nothing(
        index_elements=[tables.open_suggestions.c.subject]
    )


def _lost_channels(checkpoint: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The state's channels a checkpoint says were written but holds no value for: a
    value kept apart from the checkpoint's row (PostgreSQL's blobs) that did not land."""
    values, versions = checkpoint["channel_values"], checkpoint["channel_versions"]
    return [key for key in keys if key in versions and key not in values]


def _outside_the_graph(exc: Exception, driver_errors: tuple[type[Exception], ...]) -> bool:
    """A failure of what a run leans on (a database, the checkpointer's own driver, a
    network, or one the agent calls transient), not of the run's own steps: starting
    afresh would not mend it."""
    return isinstance(exc, (TransientError, OSError, sa.exc.SQLAlchemyError, *driver_errors))


def _suggestion_id(agent: str, trigger_id: str) -> str:
    from agentbus.envelope import derived_id

    return derived_id(agent, "suggestion", trigger_id)


def agent_service(
    agent: Agent[TriggerT, StateT, SuggestionT], options: AgentRuntimeOptions | None = None
) -> Service:
    """The service that runs `agent` as a queue consumer."""
    return AgentRunner(agent, options or AgentRuntimeOptions()).service


def read_suggestions(connection: sa.Connection) -> list[dict[str, Any]]:
    """Every suggestion this agent made, newest first, with its review status."""
    rows = connection.execute(
        sa.select(tables.suggestions).order_by(tables.suggestions.c.created_at.desc())
    )
    return [
        {
            "suggestion_id": row.suggestion_id,
            "event_id": row.event_id,
            "type": row.type,
            "subject": row.subject,
            "status": row.status,
            "data": row.data,
            "decision": row.decision,
            "trace_id": row.trace_id,
            "created_at": row.created_at.isoformat() if row.created_at else None,
        }
        for row in rows
    ]


def _record_usage(span: Span, accounting: Accounting, *, answered_by_model: bool) -> None:
    """The run's tokens, and the model that answered when one did (the GenAI
    conventions' recommended attributes of `invoke_agent`)."""
    span.set_attribute("gen_ai.usage.input_tokens", accounting.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", accounting.output_tokens)
    answered = accounting.model
    if answered_by_model and not answered.startswith(POLICY):
        span.set_attribute("gen_ai.response.model", answered)


def _state_maker(schema: type[Any] | None) -> Callable[[dict[str, Any]], Any]:
    """How the graph's answer (LangGraph's dict of channel values) becomes the state
    `suggest` is declared to take: a TypedDict is that dict already."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_validate
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return lambda values: schema(**values)
    return _same


def _same(values: dict[str, Any]) -> Any:
    return values
