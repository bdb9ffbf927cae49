"""Preparing shipments when they fall due.

A consumer never waits out the handling delay: the confirmation is applied at once
as a row with a due time, and this scheduler, a task beside the consumer, prepares
the rows that are due, each in a transaction that marks the row and stages
`shipment.prepared` in the outbox. A restart loses nothing (the rows are the
schedule), another instance of the service takes over due rows, and a cancellation
only has to change the row before it falls due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace

from agentbus.errors import AgentbusError
from agentbus.service import Context, ServiceEnv
from agentbus.store import StoreBinding, Transaction
from agentbus.telemetry import extract_context, tracer
from consumers.shipping.tables import shipments
from events import ShipmentPrepared

log = logging.getLogger(__name__)


class ShipmentScheduler:
    """Prepares due shipments; sleeps until the next one is due or a commit wakes it."""

    def __init__(
        self, store: StoreBinding, service: str, *, poll: float = 5.0, batch: int = 100
    ) -> None:
        self.store = store
        self.service = service
        # Rows scheduled by another instance wake no one here: look at least this often.
        self.poll = poll
        self.batch = batch
        self.prepared = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False

    def wake(self) -> None:
        self._wake.set()

    async def start(self, env: ServiceEnv) -> None:
        if env.settings.rebuilding:
            return  # a rebuild learns preparations from the recorded shipment.prepared
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def idle(self) -> bool:
        """Nothing due now (a shipment due later is no work in hand)."""
        if self._task is None:
            return True
        if self._busy or self._wake.is_set():
            return False
        return not await self._due_now()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._busy = True
            wait = self.poll
            try:
                while await self.prepare_due() == self.batch:
                    pass
                due = await self._next_due()
                if due is not None:
                    wait = min(self.poll, max((due - datetime.now(UTC)).total_seconds(), 0.0))
            except (AgentbusError, OSError, sa.exc.SQLAlchemyError) as exc:
                log.warning("shipping scheduler: %s; trying again in %.1fs", exc, self.poll)
            finally:
                self._busy = False
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def prepare_due(self) -> int:
        """Prepare what is due now; the number prepared."""
        ctx = Context(self.service, f"/services/{self.service}")
        count: int = await self.store.database.run(lambda tx: self._prepare(tx, ctx))
        if count:
            self.prepared += count
            self.store.relay.wake()
        return count

    def _prepare(self, tx: Transaction, ctx: Context) -> int:
        ctx.reset()  # a transaction tried again emits the same events again
        query = tx.locked(
            sa.select(shipments)
            .where(shipments.c.status == "scheduled")
            .where(shipments.c.due_at <= datetime.now(UTC))
            .order_by(shipments.c.due_at)
            .limit(self.batch),
            # A row a cancellation holds is skipped now and seen again, decided, later.
            skip_locked=True,
        )
        rows = tx.execute(query).all()
        for row in rows:
            confirmed = tx.codec.decode(row.cause)
            data = ShipmentPrepared(
                shipment_id=row.shipment_id,
                order_id=row.order_id,
                lines=[
                    {"sku": sku, "quantity": quantity} for sku, quantity in json.loads(row.lines)
                ],
            )
            with self._span(confirmed.traceparent) as span:
                ctx.emit(data, cause=confirmed, within=span)
            tx.execute(
                sa.update(shipments)
                .where(shipments.c.order_id == row.order_id)
                .values(status="prepared", due_at=None)
            )
        tx.stage(ctx.emitted)
        return len(rows)

    def _span(self, traceparent: str | None) -> Any:
        # The shipment joins the order's trace, though it leaves long after its cause.
        context = extract_context({}, fallback_traceparent=traceparent)
        return tracer().start_as_current_span(
            f"{self.service} prepare", context=context, kind=trace.SpanKind.INTERNAL
        )

    async def _next_due(self) -> datetime | None:
        def query(connection: sa.Connection) -> datetime | None:
            found = connection.execute(
                sa.select(sa.func.min(shipments.c.due_at)).where(shipments.c.status == "scheduled")
            ).scalar()
            if found is not None and found.tzinfo is None:
                found = found.replace(tzinfo=UTC)  # SQLite gives times back naive
            return found

        return await self.store.database.read(query)

    async def _due_now(self) -> bool:
        due = await self._next_due()
        return due is not None and due <= datetime.now(UTC)
