"""The outbox relay: publishes committed events with confirms, in the order written."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from agentbus.bus import Bus, publish_attributes
from agentbus.envelope import CONTENT_TYPE
from agentbus.errors import AgentbusError
from agentbus.store import tables
from agentbus.store.database import Database
from agentbus.telemetry import extract_context, inject_headers, tracer
from agentbus.transport.base import Message

log = logging.getLogger(__name__)


class OutboxRelay:
    """Moves outbox rows to the broker.

    A row is marked published only after the broker confirmed it. A relay that dies
    in between publishes the row again with the same event id on restart, and
    consumers downstream dedup it. One pump at a time holds the rows it sends
    (row locks on PostgreSQL, the write lock on SQLite), so competing processes
    never interleave a subject's events.
    """

    def __init__(
        self, database: Database, bus: Bus, *, batch: int = 500, idle_poll: float = 1.0
    ) -> None:
        self.database = database
        self.bus = bus
        self.batch = batch
        self.idle_poll = idle_poll
        self.published = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Publish what is committed, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        with contextlib.suppress(AgentbusError):
            while await self.pump():
                pass

    async def _run(self) -> None:
        delay = self.idle_poll
        while not self._stopping:
            self._wake.clear()
            try:
                sent = await self.pump()
                delay = self.idle_poll
            except (AgentbusError, OSError, sa.exc.SQLAlchemyError) as exc:
                log.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                sent = 0
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if sent:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_poll)

    async def backlog(self) -> int:
        """Rows committed but not yet confirmed by the broker."""
        outbox = tables.outbox
        async with self.database.connect() as connection:
            count = await connection.scalar(
                sa.select(sa.func.count())
                .select_from(outbox)
                .where(outbox.c.published_at.is_(None))
            )
        return int(count or 0)

    async def pump(self) -> int:
        """Publish one batch of unpublished rows; return how many."""
        outbox = tables.outbox
        async with self.database.transaction() as tx:
            query = (
                sa.select(outbox.c.seq, outbox.c.event_id, outbox.c.type, outbox.c.body)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.seq)
                .limit(self.batch)
            )
            if tx.dialect == "postgresql":
                query = query.with_for_update()
            rows = (await tx.connection.execute(query)).all()
            if not rows:
                return 0
            await self.bus.transport.publish_many([self._message(row) for row in rows])
            await tx.connection.execute(
                sa.update(outbox)
                .where(outbox.c.seq.in_([row.seq for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        self.published += len(rows)
        return len(rows)

    def _message(self, row: Any) -> Message:
        body: bytes = row.body
        exchange = self.bus.transport.exchange
        # The event's own traceparent is the context of the handling that caused it,
        # so the publish span joins that trace even though it runs later.
        parent = extract_context({}, _traceparent_of(body))
        span = tracer().start_span(
            f"publish {exchange}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=publish_attributes(exchange, row.type, row.event_id),
        )
        headers: dict[str, Any] = {}
        with trace.use_span(span, end_on_exit=True):
            inject_headers(headers)
        return Message(
            body=body,
            routing_key=row.type,
            message_id=row.event_id,
            type=row.type,
            content_type=CONTENT_TYPE,
            headers=headers,
        )


def _traceparent_of(body: bytes) -> str | None:
    marker = b'"traceparent":"'
    start = body.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = body.find(b'"', start)
    return body[start:end].decode("ascii", "replace") if end > 0 else None
