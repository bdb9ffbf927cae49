"""How an application declares a service: its queue, handlers and what it publishes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel

from agentbus.envelope import Event, derived_id, new_event
from agentbus.telemetry import inject_headers
from agentbus.transport.base import LogPartition, PositionStore

if TYPE_CHECKING:
    from agentbus.bus import Bus
    from agentbus.settings import Settings


__all__ = ["Context", "Route", "Service", "ServiceEnv"]


class Context:
    """Given to a handler: collects the events it emits, with deterministic ids.

    An emitted event's id derives from the service, the event that caused it, its
    type and its rank among the events of that type emitted for that cause, so a
    redelivered trigger produces the same ids and downstream dedup catches repeats.
    """

    def __init__(
        self,
        service: str,
        source: str,
        spans: dict[str, Span] | None = None,
        *,
        time_of_cause: bool = False,
    ) -> None:
        self.service = service
        self.source = source
        # Simulations and replays stamp derived events with their cause's time, so
        # that time follows the recording, not the machine running it.
        self.time_of_cause = time_of_cause
        self.emitted: list[Event[Any]] = []
        # Where each log partition of the batch is to be read from once the batch has
        # taken effect: stored with the effects by a service that keeps its positions.
        self.positions: dict[LogPartition, int] = {}
        self._ranks: dict[tuple[str, str], int] = {}
        self._spans = spans or {}

    def reset(self) -> None:
        """Forget what was emitted: a unit of work about to run again starts afresh."""
        self.emitted.clear()
        self._ranks.clear()

    def emit(
        self,
        data: BaseModel,
        *,
        cause: Event[Any],
        time: datetime | None = None,
        within: Span | None = None,
    ) -> Event[Any]:
        """Emit an event caused by `cause`; its publish span joins the trace under
        `within` if given, else under the span that handled `cause`."""
        event_type: str = getattr(data, "event_type")  # noqa: B009 - a catalog ClassVar
        rank = self._ranks.get((cause.id, event_type), 0)
        self._ranks[(cause.id, event_type)] = rank + 1
        event = new_event(
            data,
            source=self.source,
            cause=cause,
            id=derived_id(self.service, cause.id, event_type, str(rank)),
            time=time or (cause.time if self.time_of_cause else None),
        )
        traceparent = self._traceparent(within or self._spans.get(cause.id))
        if traceparent is not None:
            # The CloudEvents tracing extension: the context the event was made in,
            # which survives a wait in an outbox.
            event = event.model_copy(update={"traceparent": traceparent})
        self.emitted.append(event)
        return event

    def _traceparent(self, span: Span | None) -> str | None:
        if span is None or not span.get_span_context().is_valid:
            return None
        carrier: dict[str, Any] = {}
        inject_headers(carrier, trace.set_span_in_context(span))
        value = carrier.get("traceparent")
        return value if isinstance(value, str) else None


# The data class of the events a handler is registered for, and a union when it is
# registered for several, so that the handler declares `Event[A | B]` and narrows the
# data with `isinstance`. (One TypeVar over all the classes would be inferred as their
# common base, of which the handler could read no field; hence one per class.)
D = TypeVar("D", bound=BaseModel)
D1 = TypeVar("D1", bound=BaseModel)
D2 = TypeVar("D2", bound=BaseModel)
D3 = TypeVar("D3", bound=BaseModel)
D4 = TypeVar("D4", bound=BaseModel)
D5 = TypeVar("D5", bound=BaseModel)
D6 = TypeVar("D6", bound=BaseModel)
D7 = TypeVar("D7", bound=BaseModel)
D8 = TypeVar("D8", bound=BaseModel)


# Protocols rather than `Callable` aliases: an alias over `Event[D]` cannot be
# subscripted at run time (pydantic's generic models hide their parameters), and the
# arguments are positional-only so that any parameter names match.
class Handler(Protocol[D]):
    """`handler(event, ctx)` of a service, for events of data class `D`."""

    def __call__(self, event: Event[D], ctx: Context, /) -> Awaitable[None]: ...


class BatchHandler(Protocol[D]):
    """`handler(events, ctx)` of a service, for a batch of events of data class `D`."""

    def __call__(self, events: Sequence[Event[D]], ctx: Context, /) -> Awaitable[None]: ...


_Handles = Callable[[Handler[D]], Handler[D]]
_HandlesBatch = Callable[[BatchHandler[D]], BatchHandler[D]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])


def event_type_of(kind: str | type[BaseModel]) -> str:
    """The type string a route is registered under: a catalog class's `event_type`, or
    the string itself (routes built from declarations that name types, as agents do)."""
    if isinstance(kind, str):
        return kind
    event_type = getattr(kind, "event_type", None)
    if not isinstance(event_type, str) or not event_type:
        raise TypeError(f"{kind.__name__} declares no `event_type`: is it a catalog model?")
    return event_type


@dataclass(frozen=True, slots=True)
class ServiceEnv:
    """What a service's start-up hooks get: the bus and the settings."""

    bus: Bus
    settings: Settings


Startup = Callable[[ServiceEnv], Awaitable[None]]
Shutdown = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    event_type: str
    handler: Callable[..., Awaitable[None]]
    batch: bool
    max_batch: int = 1


@dataclass
class Service:
    """A named consumer: one durable queue bound to the event types it handles."""

    name: str
    queue: str = ""
    publishes: Sequence[str] = ()
    description: str = ""
    # Caps the lanes of the consumer. 1 keeps the queue's delivery order across
    # subjects too, for a service whose decisions depend on events of several
    # subjects (an order reserves stock of several SKUs).
    max_concurrency: int | None = None
    # A transient failure is tried again where it stands, holding its lane, instead of
    # through a delay queue that lets later events overtake it: with max_concurrency 1
    # nothing the queue delivered after it is applied before it, so the service applies
    # the queue's order exactly, as a rebuild from a recording does. (On a log broker
    # every service retries so.)
    retries_in_place: bool = False
    # Lanes wanted regardless of the consumer default: an agent waiting on a model
    # keeps many runs in flight.
    concurrency: int | None = None
    # A batching service keeps a batch in flight while the next one arrives, so it
    # wants a deeper window than the consumer default.
    prefetch: int | None = None
    # Its state comes from the events it consumes alone, and under settings that say
    # `rebuilding` it starts nothing outside its database: `agentbus rebuild` may run it.
    rebuildable: bool = False
    routes: dict[str, Route] = field(default_factory=dict)
    startup: list[Startup] = field(default_factory=list)
    shutdown: list[Shutdown] = field(default_factory=list)
    # Each says whether the service has work of its own left (an outbox backlog).
    idle_checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    # Each raises when something the service needs (its database) does not answer.
    ready_checks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Events committed but not yet published, for the outbox backlog gauge.
    backlog: Callable[[], Awaitable[int]] | None = None
    # Where the service stores the positions it reached in a log, with its effects
    # (each handler then saves `Context.positions` in its transaction).
    positions: PositionStore | None = None
    # Serves /metrics on its own HTTP port (an API): the Prometheus reader is wanted
    # even without a separate metrics port.
    serves_metrics: bool = False

    def __post_init__(self) -> None:
        if not self.queue:
            self.queue = self.name

    @property
    def subscribes(self) -> tuple[str, ...]:
        return tuple(self.routes)

    @property
    def source(self) -> str:
        return f"/services/{self.name}"

    def on_startup(self, hook: Startup) -> Startup:
        """Run `hook(env)` before the service consumes (open a database, say)."""
        self.startup.append(hook)
        return hook

    def on_shutdown(self, hook: Shutdown) -> Shutdown:
        """Run `hook()` after the service has stopped consuming and drained."""
        self.shutdown.append(hook)
        return hook

    @overload
    def handles(self, c1: type[D1], /) -> _Handles[D1]: ...
    @overload
    def handles(self, c1: type[D1], c2: type[D2], /) -> _Handles[D1 | D2]: ...
    @overload
    def handles(self, c1: type[D1], c2: type[D2], c3: type[D3], /) -> _Handles[D1 | D2 | D3]: ...
    @overload
    def handles(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], /
    ) -> _Handles[D1 | D2 | D3 | D4]: ...
    @overload
    def handles(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], /
    ) -> _Handles[D1 | D2 | D3 | D4 | D5]: ...
    @overload
    def handles(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], c6: type[D6], /
    ) -> _Handles[D1 | D2 | D3 | D4 | D5 | D6]: ...
    @overload
    def handles(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        /,
    ) -> _Handles[D1 | D2 | D3 | D4 | D5 | D6 | D7]: ...
    @overload
    def handles(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        c8: type[D8],
        /,
    ) -> _Handles[D1 | D2 | D3 | D4 | D5 | D6 | D7 | D8]: ...

    @overload
    def handles(self, *event_types: str) -> Callable[[H], H]: ...
    def handles(self, *kinds: str | type[BaseModel]) -> Callable[[H], H]:
        """Register `handler(event, ctx)` for each of the event classes.

        `@service.handles(OrderCreated)` wants `handler(event: Event[OrderCreated], ctx)`,
        and mypy checks it; several classes want `Event[A | B]`. Type strings, which
        nothing checks, are for routes built from declarations (an agent's triggers).
        """
        return self._register(kinds, batch=False, max_batch=1)

    @overload
    def handles_batch(self, c1: type[D1], /, *, max_batch: int = ...) -> _HandlesBatch[D1]: ...
    @overload
    def handles_batch(
        self, c1: type[D1], c2: type[D2], /, *, max_batch: int = ...
    ) -> _HandlesBatch[D1 | D2]: ...
    @overload
    def handles_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], /, *, max_batch: int = ...
    ) -> _HandlesBatch[D1 | D2 | D3]: ...
    @overload
    def handles_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], /, *, max_batch: int = ...
    ) -> _HandlesBatch[D1 | D2 | D3 | D4]: ...
    @overload
    def handles_batch(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        /,
        *,
        max_batch: int = ...,
    ) -> _HandlesBatch[D1 | D2 | D3 | D4 | D5]: ...
    @overload
    def handles_batch(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        /,
        *,
        max_batch: int = ...,
    ) -> _HandlesBatch[D1 | D2 | D3 | D4 | D5 | D6]: ...
    @overload
    def handles_batch(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        /,
        *,
        max_batch: int = ...,
    ) -> _HandlesBatch[D1 | D2 | D3 | D4 | D5 | D6 | D7]: ...
    @overload
    def handles_batch(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        c8: type[D8],
        /,
        *,
        max_batch: int = ...,
    ) -> _HandlesBatch[D1 | D2 | D3 | D4 | D5 | D6 | D7 | D8]: ...

    @overload
    def handles_batch(self, *event_types: str, max_batch: int = ...) -> Callable[[H], H]: ...
    def handles_batch(
        self, *kinds: str | type[BaseModel], max_batch: int = 128
    ) -> Callable[[H], H]:
        """Register `handler(events, ctx)`: consecutive deliveries arrive as one list.

        Typed as `handles` is: `Sequence[Event[A | B]]` for classes A and B. The list is
        applied as a unit (one transaction, one ack). If it raises, the runtime replays
        its events one at a time, so one bad event cannot sink the rest.
        """
        return self._register(kinds, batch=True, max_batch=max_batch)

    def _register(
        self, kinds: Sequence[str | type[BaseModel]], *, batch: bool, max_batch: int
    ) -> Callable[[H], H]:
        if not kinds:
            raise ValueError("name at least one event type")
        # Resolved here, once: the runtime routes by the type string alone.
        event_types = [event_type_of(kind) for kind in kinds]

        def decorate(handler: H) -> H:
            for event_type in event_types:
                if event_type in self.routes:
                    raise ValueError(f"{self.name} already handles {event_type!r}")
                self.routes[event_type] = Route(event_type, handler, batch, max_batch)
            return handler

        return decorate
