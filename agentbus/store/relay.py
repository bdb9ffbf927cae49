"""The outbox relay: publishes committed events with confirms, in the order written."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from agentbus.bus import Bus
from agentbus.conventions import publish_span
from agentbus.envelope import CONTENT_TYPE
from agentbus.errors import AgentbusError, Unroutable
from agentbus.metrics import instruments
from agentbus.store import tables
from agentbus.store.database import Database
from agentbus.store.lease import Lease
from agentbus.telemetry import extract_context, inject_headers, tracer
from agentbus.transport.base import PARTITION_KEY_HEADER, Message
from agentbus.wake_loop import Round, WakeLoop

log = logging.getLogger(__name__)


class OutboxRelay:
    """Moves outbox rows to the broker.

    A row is marked published only after the broker confirmed it. A relay that dies
    in between publishes the row again with the same event id on restart, and
    consumers downstream dedup it. Only the holder of the database's relay lease
    publishes, so competing processes never interleave a subject's events.
    """

    def __init__(
        self,
        database: Database,
        bus: Bus,
        *,
        batch: int = 500,
        idle_poll: float = 1.0,
        unroutable_grace: float = 30.0,
        name: str = "",
    ) -> None:
        self.database = database
        self._metric_attributes = {"agentbus.service": name or (database.schema or "")}
        self.bus = bus
        self.batch = batch
        self.idle_poll = idle_poll
        self.unroutable_grace = unroutable_grace
        self.published = 0
        self.unroutable = 0
        self._lease: Lease = database.adapter.lease(database.engine, database.schema)
        self._loop = WakeLoop(
            self._round,
            name="outbox relay",
            idle=idle_poll,
            backoff=idle_poll,
            max_backoff=30.0,
            retry_on=(AgentbusError, OSError, sa.exc.SQLAlchemyError),
        )
        # Wakes so far, and how many there had been when a pump last found the outbox
        # empty: equal means nothing was committed since, which `quiet` answers
        # without a query (settling in-process replays asks that after every step).
        self._wakes = 0
        self._drained_at = -1
        self._leader = False  # held the lease at the last pump

    def wake(self) -> None:
        self._wakes += 1
        self._loop.wake()

    @property
    def quiet(self) -> bool:
        """This relay holds the lease and found the outbox empty after the last wake."""
        return self._drained_at == self._wakes

    @property
    def publishing(self) -> bool:
        """Not quiet, and this relay holds the lease: it pumps again until it is.

        Writers wake it only after staging rows, so there is no need to count them.
        """
        return self._leader and not self.quiet

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Publish what is committed, then stop and give up the lease."""
        await self._loop.stop()
        await self._loop.drain()  # also when it was never started (an attached relay)
        await self.database.read(lambda _: self._lease.release())

    async def _round(self) -> Round:
        sent = await self.pump()
        return Round.MORE if sent and not self.quiet else Round.DONE

    async def backlog(self) -> int:
        """Rows committed but not yet confirmed by the broker."""

        def count(connection: sa.Connection) -> int:
            return int(connection.scalar(_BACKLOG) or 0)

        return await self.database.read(count)

    async def pump(self) -> int:
        """Publish one batch of unpublished rows, if this process holds the lease."""
        batch = self.batch
        lease = self._lease
        adapter = self.database.adapter

        wakes = self._wakes

        def take(connection: sa.Connection) -> list[Any] | None:
            if not lease.acquire():
                return None
            return adapter.unpublished(connection, batch)

        rows = await self.database.read(take)
        self._leader = rows is not None
        if rows is None:
            self._drained_at = -1  # another process publishes this outbox
            return 0
        if not rows:
            self._drained_at = wakes
            return 0
        prepared = [self._message(row) for row in rows]
        failure: BaseException | None = None
        try:
            outcomes = await self.bus.transport.publish_each([message for message, _ in prepared])
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # Each publish span lasts until the broker confirmed (or refused) its message.
            for index, (_, span) in enumerate(prepared):
                outcome = failure if failure is not None else outcomes[index]
                if outcome is not None:
                    span.set_attribute("error.type", type(outcome).__name__)
                    span.set_status(trace.StatusCode.ERROR)
                span.end()
        for outcome in outcomes:
            if outcome is not None and not isinstance(outcome, Unroutable):
                raise outcome  # the broker is in trouble: retry the batch later
        sent = [row.seq for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        refused = [row for row, outcome in zip(rows, outcomes, strict=True) if outcome is not None]
        if refused:
            sent += await self._unroutable(refused)
        now = datetime.now(UTC)
        await self.database.run(lambda tx: adapter.mark_published(tx.connection, sent, now))
        self.published += len(sent)
        instruments().published.add(len(sent), self._metric_attributes)
        if len(rows) < batch and not refused:
            # The read saw the whole backlog, and all of it is out: only a commit
            # since (a wake) can have left more. One read per burst, not two.
            self._drained_at = wakes
        return len(sent)

    async def _unroutable(self, rows: list[Any]) -> list[int]:
        """Events no queue is bound for are retried for a grace period (a consumer may
        still be starting), then given up: marked published with `unroutable_since`
        set and logged, so they stay in the outbox table to inspect and never block
        the events behind them. Returns the rows given up on."""
        sent: list[int] = []
        first_refusals: list[int] = []
        now = datetime.now(UTC)
        for row in rows:
            since = row.unroutable_since
            if since is None:
                first_refusals.append(row.seq)
                continue
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            if (now - since).total_seconds() >= self.unroutable_grace:
                log.warning(
                    "outbox: %s %s is unroutable (no queue bound) since %s; giving up on it",
                    row.type,
                    row.event_id,
                    since.isoformat(),
                )
                self.unroutable += 1
                sent.append(row.seq)
        if first_refusals:
            outbox = tables.outbox
            await self.database.run(
                lambda tx: tx.execute(
                    sa.update(outbox)
                    .where(outbox.c.seq.in_(first_refusals))
                    .values(unroutable_since=now)
                )
            )
        return sent

    def _message(self, row: Any) -> tuple[Message, trace.Span]:
        body: bytes = row.body
        exchange = self.bus.transport.exchange
        # The event's own traceparent is the context of the handling that caused it,
        # so the publish span joins that trace even though it runs later.
        parent = extract_context({}, _attribute_of(body, b"traceparent"))
        name, attributes = publish_span(
            self.bus.transport.broker_info,
            exchange,
            row.type,
            row.event_id,
            _attribute_of(body, b"correlationid"),
        )
        span = tracer().start_span(
            name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        headers: dict[str, Any] = {PARTITION_KEY_HEADER: row.subject or row.event_id}
        with trace.use_span(span, end_on_exit=False):
            inject_headers(headers)
        message = Message(
            body=body,
            routing_key=row.type,
            message_id=row.event_id,
            type=row.type,
            content_type=CONTENT_TYPE,
            headers=headers,
        )
        return message, span


_OUTBOX = tables.outbox
_BACKLOG = sa.select(sa.func.count()).select_from(_OUTBOX).where(_OUTBOX.c.published_at.is_(None))


def _attribute_of(body: bytes, name: bytes) -> str | None:
    """A string attribute of an event the codec encoded (compact JSON, attributes before
    data), found without parsing the body."""
    marker = b'"' + name + b'":"'
    start = body.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = body.find(b'"', start)
    return body[start:end].decode("ascii", "replace") if end > 0 else None
