"""Attaching a database to a service so that it applies each event exactly once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

import sqlalchemy as sa
from pydantic import BaseModel

from agentbus.envelope import Event
from agentbus.errors import ConfigurationError
from agentbus.service import (
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    Context,
    D,
    Service,
    ServiceEnv,
    event_type_of,
)
from agentbus.store.database import Database, Transaction, open_database, stored_positions
from agentbus.store.migrations import Migration
from agentbus.store.relay import OutboxRelay


class Apply(Protocol[D]):
    """`apply(tx, event, ctx)`, for events of data class `D`: a union for several classes."""

    def __call__(self, tx: Transaction, event: Event[D], ctx: Context, /) -> None: ...


class ApplyBatch(Protocol[D]):
    """`apply(tx, events, ctx)`, for a batch of events of data class `D`."""

    def __call__(self, tx: Transaction, events: Sequence[Event[D]], ctx: Context, /) -> None: ...


_Applies = Callable[[Apply[D]], Apply[D]]
_AppliesBatch = Callable[[ApplyBatch[D]], ApplyBatch[D]]
A = TypeVar("A", bound=Apply[Any])
B = TypeVar("B", bound=ApplyBatch[Any])


class StoreBinding:
    """A service's database and outbox relay, opened and closed with the service.

    Appliers are plain functions run in the database's worker thread. A batch of
    deliveries is claimed in the inbox, applied, and its emitted events staged in
    the outbox, all in one transaction, then acked together. An event id already
    in the inbox is skipped, so redeliveries and duplicates change nothing.
    """

    def __init__(
        self, service: Service, migrations: Sequence[Migration] = (), *, max_batch: int = 256
    ) -> None:
        self.service = service
        self.migrations = tuple(migrations)
        self.max_batch = max_batch
        self._database: Database | None = None
        self._relay: OutboxRelay | None = None
        self._appliers: dict[str, Apply[Any]] = {}
        self._batch_appliers: dict[str, ApplyBatch[Any]] = {}
        self._after_commit: list[Callable[[], None]] = []
        # One bound method object, so the runtime batches events of all our types together.
        self._handler = self._handle
        service.on_startup(self._open)
        service.on_shutdown(self._close)
        service.idle_checks.append(self._relay_idle)
        service.ready_checks.append(self._database_answers)
        service.backlog = self._backlog

    @property
    def database(self) -> Database:
        if self._database is None:
            raise ConfigurationError(f"{self.service.name}: the database is not open")
        return self._database

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise ConfigurationError(f"{self.service.name}: the relay is not running")
        return self._relay

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook()` after each committed batch (wake a sender, say)."""
        self._after_commit.append(hook)

    @overload
    def applies(self, c1: type[D1], /) -> _Applies[D1]: ...
    @overload
    def applies(self, c1: type[D1], c2: type[D2], /) -> _Applies[D1 | D2]: ...
    @overload
    def applies(self, c1: type[D1], c2: type[D2], c3: type[D3], /) -> _Applies[D1 | D2 | D3]: ...
    @overload
    def applies(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], /
    ) -> _Applies[D1 | D2 | D3 | D4]: ...
    @overload
    def applies(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], /
    ) -> _Applies[D1 | D2 | D3 | D4 | D5]: ...
    @overload
    def applies(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], c6: type[D6], /
    ) -> _Applies[D1 | D2 | D3 | D4 | D5 | D6]: ...
    @overload
    def applies(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        /,
    ) -> _Applies[D1 | D2 | D3 | D4 | D5 | D6 | D7]: ...
    @overload
    def applies(
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
    ) -> _Applies[D1 | D2 | D3 | D4 | D5 | D6 | D7 | D8]: ...

    @overload
    def applies(self, *event_types: str) -> Callable[[A], A]: ...
    def applies(self, *kinds: str | type[BaseModel]) -> Callable[[A], A]:
        """Register `apply(tx, event, ctx)` for event classes, inside the service's transaction.

        `@store.applies(OrderCreated)` wants `apply(tx, event: Event[OrderCreated], ctx)`,
        and mypy checks it; several classes want `Event[A | B]`. Type strings, which
        nothing checks, are for appliers built from declarations (an agent's decisions).
        """
        event_types = [event_type_of(kind) for kind in kinds]

        def decorate(apply: A) -> A:
            for event_type in event_types:
                self._appliers[event_type] = apply
            self._route(event_types)
            return apply

        return decorate

    @overload
    def applies_batch(self, c1: type[D1], /) -> _AppliesBatch[D1]: ...
    @overload
    def applies_batch(self, c1: type[D1], c2: type[D2], /) -> _AppliesBatch[D1 | D2]: ...
    @overload
    def applies_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], /
    ) -> _AppliesBatch[D1 | D2 | D3]: ...
    @overload
    def applies_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], /
    ) -> _AppliesBatch[D1 | D2 | D3 | D4]: ...
    @overload
    def applies_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], /
    ) -> _AppliesBatch[D1 | D2 | D3 | D4 | D5]: ...
    @overload
    def applies_batch(
        self, c1: type[D1], c2: type[D2], c3: type[D3], c4: type[D4], c5: type[D5], c6: type[D6], /
    ) -> _AppliesBatch[D1 | D2 | D3 | D4 | D5 | D6]: ...
    @overload
    def applies_batch(
        self,
        c1: type[D1],
        c2: type[D2],
        c3: type[D3],
        c4: type[D4],
        c5: type[D5],
        c6: type[D6],
        c7: type[D7],
        /,
    ) -> _AppliesBatch[D1 | D2 | D3 | D4 | D5 | D6 | D7]: ...
    @overload
    def applies_batch(
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
    ) -> _AppliesBatch[D1 | D2 | D3 | D4 | D5 | D6 | D7 | D8]: ...

    @overload
    def applies_batch(self, *event_types: str) -> Callable[[B], B]: ...
    def applies_batch(self, *kinds: str | type[BaseModel]) -> Callable[[B], B]:
        """Register `apply(tx, events, ctx)`: the batch's new events, in delivery order.

        For services that load what a batch touches in a few queries, change it in
        memory and save it in a few more. Typed as `applies` is, with
        `Sequence[Event[A | B]]` for classes A and B.
        """
        event_types = [event_type_of(kind) for kind in kinds]

        def decorate(apply: B) -> B:
            for event_type in event_types:
                self._batch_appliers[event_type] = apply
            self._route(event_types)
            return apply

        return decorate

    def _route(self, event_types: Sequence[str]) -> None:
        # Its handler stores the positions the runtime gives it with the batch's effects.
        self.service.positions = self
        for event_type in event_types:
            if event_type not in self.service.routes:
                self.service.handles_batch(event_type, max_batch=self.max_batch)(self._handler)

    async def attach(self, database: Database, relay: OutboxRelay | None) -> None:
        """Use an already open database (tests, benchmarks) instead of opening one."""
        await database.migrate(self.migrations)
        self._database = database
        self._relay = relay

    async def _open(self, env: ServiceEnv) -> None:
        if self._database is not None:
            return
        database = open_database(
            self.service.name,
            env.bus.codec,
            url=env.settings.database_url,
            data_dir=env.settings.data_dir,
            on_loop=env.settings.stores_on_loop,
            scratch=env.settings.sqlite_scratch,
        )
        await database.migrate(self.migrations)
        relay = OutboxRelay(database, env.bus, name=self.service.name)
        await relay.start()
        self._database = database
        self._relay = relay

    async def _close(self) -> None:
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._database is not None:
            await self._database.close()
            self._database = None

    async def _database_answers(self) -> None:
        await self.database.read(lambda connection: connection.execute(sa.text("SELECT 1")))

    async def stored_positions(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], int]:
        return await self.database.read(lambda c: stored_positions(c, group, partitions))

    async def _backlog(self) -> int:
        return 0 if self._relay is None else await self._relay.backlog()

    async def _relay_idle(self) -> bool:
        relay = self._relay
        if relay is None or relay.quiet:
            return True
        if relay.publishing:
            return False
        return await relay.backlog() == 0

    async def _handle(self, events: Sequence[Event[Any]], ctx: Context) -> None:
        await self.database.run(lambda tx: self._transaction(tx, events, ctx))
        staged = bool(ctx.emitted)
        # They leave through the outbox, not straight from the runtime.
        ctx.emitted.clear()
        if staged and self._relay is not None:
            # Only a commit that staged rows gives the relay work: most commits of a
            # projection or a payment stage none, and a wake costs the relay a read.
            self._relay.wake()
        for hook in self._after_commit:
            hook()

    def _transaction(self, tx: Transaction, events: Sequence[Event[Any]], ctx: Context) -> None:
        ctx.reset()  # a repeat (the database came back) emits the same events with the same ids
        fresh = tx.claim(self.service.name, [event.id for event in events])
        new: list[Event[Any]] = []
        for event in events:
            if event.id in fresh:
                fresh.discard(event.id)  # a second copy within the batch is a duplicate
                new.append(event)
        run: list[Event[Any]] = []
        batch_apply: ApplyBatch[Any] | None = None
        for event in new:
            found = self._batch_appliers.get(event.type)
            if found is not None and found is batch_apply:
                run.append(event)
                continue
            if batch_apply is not None:
                batch_apply(tx, run, ctx)
                run, batch_apply = [], None
            if found is not None:
                batch_apply, run = found, [event]
            else:
                self._appliers[event.type](tx, event, ctx)
        if batch_apply is not None:
            batch_apply(tx, run, ctx)
        tx.stage(ctx.emitted)
        tx.advance(ctx.positions)
