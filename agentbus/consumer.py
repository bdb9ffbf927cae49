"""The consumer runtime: runs a `Service` on a queue of a transport.

Per delivery: decode strictly (a malformed message is dead-lettered at once with
its reason code), then hand the event to a lane chosen by its subject. A lane
handles its events one at a time in delivery order, so events of one subject
never overtake each other while different subjects run in parallel, `concurrency`
lanes wide. Failures follow their kind: permanent -> dead letter; transient or
unexpected -> tried again after a growing delay, then the dead letter once attempts
run out. How it is tried again is the transport's to say (`BrokerInfo.retries`): on
AMQP through a delay queue that the broker dead-letters back, freeing the lane; on a
log (Kafka), which has no per-message nack, in place: the lane holds the record and
its partition stops fetching until the record is done or the partition is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

from agentbus.acks import AckBatcher
from agentbus.bus import Bus
from agentbus.conventions import ProcessSpans
from agentbus.envelope import Event, name_of
from agentbus.errors import (
    BrokerUnavailable,
    MalformedEvent,
    PermanentError,
    ProcessingError,
    one_line,
)
from agentbus.metrics import instruments, watch_consumer
from agentbus.retry import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_CODE_HEADER,
    ERROR_DETAIL_HEADER,
    FAILED_AT_HEADER,
    ORIGIN_QUEUE_HEADER,
    ROUTING_KEY_HEADER,
    dead_letter_queue,
    partition_queue,
    retry_queue,
    topology,
)
from agentbus.service import Context, Route, Service
from agentbus.settings import ConsumerSettings
from agentbus.telemetry import extract_context, tracer
from agentbus.transport.base import (
    Delivery,
    LogDelivery,
    LogPartition,
    Message,
    QueueSpec,
    Subscription,
    is_log_delivery,
)

log = logging.getLogger(__name__)

MAX_DETAIL = 500
UNEXPECTED = "unexpected_error"
# How often a retry waiting in place looks whether its partition was revoked.
STALE_CHECK = 0.1


@dataclass
class ConsumerStats:
    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    ignored: int = 0
    batches: int = 0


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    event: Event[Any]
    route: Route
    # Handlings so far, for retries in place (queued retries count in a header).
    attempts: int = 0


class _Lane:
    """Events of the subjects hashed here, handled one batch at a time, in order.

    The delivery that finds a lane idle starts one task to drain it, and the lane's
    later deliveries just join its queue. The task is the runtime's own, not the
    delivery callback's: a client library cancels its callbacks when the channel
    closes, and a drain cut short mid-batch would leave later events of a subject
    queued ahead of the redelivered earlier ones.
    """

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.running = False
        self.pending: dict[str, int] = {}  # subject -> events queued or in hand here

    def take_batch(self) -> tuple[list[_Item], list[_Item]]:
        """The next batch, and the stale deliveries found in front of or inside it.

        A delivery whose channel has closed is not applied: the broker delivers it
        again, in its place, and applying the ones behind it first would let them
        overtake it.
        """
        batch: list[_Item] = []
        stale: list[_Item] = []
        items = self.items
        while items:
            item = items[0]
            if item.delivery.stale:
                stale.append(items.popleft())
                continue
            if batch:
                first = batch[0]
                if (
                    not first.route.batch
                    or len(batch) >= first.route.max_batch
                    or item.route.handler is not first.route.handler
                ):
                    break
            batch.append(items.popleft())
        return batch, stale


class Consumer:
    """Consumes one service's queue until stopped."""

    def __init__(
        self,
        service: Service,
        bus: Bus,
        settings: ConsumerSettings | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        self.service = service
        self.partition = partition
        self._queue = (
            service.queue if partition is None else partition_queue(service.queue, partition)
        )
        self.bus = bus
        self.settings = settings or ConsumerSettings()
        if service.prefetch is not None:
            self.settings = replace(self.settings, prefetch=service.prefetch)
        self.stats = ConsumerStats()
        self._acks = AckBatcher(linger=self.settings.ack_linger, spill=self.settings.prefetch // 2)
        lanes = self.settings.concurrency
        if service.concurrency is not None:
            lanes = service.concurrency
        if service.max_concurrency is not None:
            lanes = min(lanes, service.max_concurrency)
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        # An ordered set: a lane is listed once however often it goes idle.
        self._idle_lanes: dict[int, _Lane] = {id(lane): lane for lane in reversed(self._lanes)}
        self._assigned: dict[str, _Lane] = {}
        self._subscription: Subscription | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._broker = bus.transport.broker_info
        self._in_place = self._broker.retries == "in_place"
        self._held_retries = service.retries_in_place and not self._in_place
        self._spans = ProcessSpans(self._broker, bus.transport.exchange, self._queue)
        self._in_flight = 0
        self._drains: set[asyncio.Task[None]] = set()
        self._metric_attributes: dict[tuple[str, str], dict[str, str]] = {}
        watch_consumer(self)

    @property
    def queue(self) -> str:
        """The queue consumed: the service's, or one partition of it."""
        return self._queue

    @property
    def group(self) -> str:
        """The service's queue, of which `queue` may be a partition."""
        return self.service.queue

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def topology(self) -> list[QueueSpec]:
        return topology(
            self.queue,
            self.service.subscribes,
            self.settings.retry,
            kind=self.settings.queue_kind,
            delivery_limit=self.settings.delivery_limit,
            partition_group=None if self.partition is None else self.group,
            retry_queues=not (self._in_place or self._held_retries),
        )

    async def start(self) -> None:
        await self.bus.transport.declare(self.topology())
        await self.subscribe()

    async def subscribe(self) -> None:
        """Consume the queue (declared already)."""
        self._subscription = await self.bus.transport.consume(
            self.queue,
            self._on_delivery,
            prefetch=self.settings.prefetch,
            positions=self.service.positions,
        )

    async def hand_over(self) -> None:
        """Let another process take the queue over, as if this one had crashed.

        The channel closes first, so everything unacked returns to the queue in its
        place before anyone else can see what follows it; the batch in hand still
        finishes (a copy the next owner gets is a duplicate to it), the rest is
        dropped as stale. A graceful stop would cancel first and, on a single active
        consumer queue, let the next owner run ahead while this one drains.
        """
        if self._subscription is not None:
            await self._acks.flush()  # what is finished need not be redone by the next owner
            await self._subscription.close()
            self._subscription = None
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout)
        except TimeoutError:
            log.warning("%s: %d deliveries unfinished at hand-over", self.queue, self._in_flight)
        await self._acks.close()

    async def stop(self) -> None:
        """Stop taking deliveries, finish and ack what is in flight, then return."""
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout)
        except TimeoutError:
            log.warning("%s: %d deliveries unfinished at shutdown", self.queue, self._in_flight)
        await self._acks.close()

    # -- intake ----------------------------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        self._in_flight += 1
        self._idle.clear()
        self._acks.track(delivery)
        message = delivery.message
        try:
            event = self.bus.codec.decode(
                message.body,
                content_type=message.content_type,
                message_type=message.type,
                headers=message.headers,
                header_prefix=self._broker.header_prefix,
            )
        except MalformedEvent as exc:
            await self._dead_letter(delivery, exc.code, exc.detail, attempts=1)
            return
        route = self.service.routes.get(event.type)
        if route is None:
            # Bound by a wider pattern than the handlers cover: nothing to do.
            self.stats.ignored += 1
            self._count(event.type, "ignored")
            self._finish(delivery)
            return
        lane = self._lane_for(event.key)
        lane.items.append(_Item(delivery, event, route))
        lane.pending[event.key] = lane.pending.get(event.key, 0) + 1
        if not lane.running:
            lane.running = True
            task = asyncio.get_running_loop().create_task(self._drain(lane))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    def _lane_for(self, key: str) -> _Lane:
        """The lane that holds the subject's earlier events, else an idle one.

        Keeping a subject on one lane while it has events pending keeps their
        order; handing new subjects to idle lanes (rather than hashing them onto
        busy ones) keeps as many subjects in flight as there are lanes.
        """
        lane = self._assigned.get(key)
        if lane is not None:
            return lane
        while self._idle_lanes:
            _, candidate = self._idle_lanes.popitem()
            if not candidate.pending and not candidate.running:
                lane = candidate
                break
        if lane is None:
            lane = self._lanes[zlib.crc32(key.encode()) % len(self._lanes)]
        self._assigned[key] = lane
        return lane

    def _release(self, lane: _Lane, items: Sequence[_Item]) -> None:
        for item in items:
            key = item.event.key
            left = lane.pending.get(key, 0) - 1
            if left > 0:
                lane.pending[key] = left
                continue
            lane.pending.pop(key, None)
            if self._assigned.get(key) is lane:
                del self._assigned[key]

    def _finish(self, delivery: Delivery, *, acked: bool = True) -> None:
        if acked:
            self._acks.done(delivery)
        else:
            self._acks.settled(delivery)
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    # -- handling ----------------------------------------------------------------------

    async def _drain(self, lane: _Lane) -> None:
        lane.running = True
        try:
            while lane.items:
                if lane.items[0].route.batch and len(lane.items) < lane.items[0].route.max_batch:
                    # One turn of the loop lets deliveries already read off the
                    # socket join this batch.
                    await asyncio.sleep(0)
                batch, stale = lane.take_batch()
                if stale:
                    for item in stale:
                        self._finish(item.delivery, acked=False)
                    self._release(lane, stale)
                if not batch:
                    continue
                try:
                    await self._handle(batch)
                except Exception:  # never let a lane stall: its subjects would stop
                    log.exception("%s: unexpected failure in the runtime", self.queue)
                    for item in batch:
                        await self._requeue(item.delivery)
                finally:
                    self._release(lane, batch)
        finally:
            lane.running = False
            if not lane.pending:
                self._idle_lanes[id(lane)] = lane

    async def _handle(self, batch: Sequence[_Item]) -> None:
        self.stats.batches += 1
        started = time.perf_counter()
        spans = [self._start_span(item) for item in batch]
        context = Context(
            self.service.name,
            self.service.source,
            {item.event.id: span for item, span in zip(batch, spans, strict=True)},
            time_of_cause=self.settings.event_time == "cause",
        )
        if self._in_place and self.service.positions is not None:
            # Only a log has positions: queue brokers pay nothing for them.
            context.positions = _positions(batch)
        route = batch[0].route
        try:
            with trace.use_span(spans[0], end_on_exit=False):
                if route.batch:
                    await route.handler([item.event for item in batch], context)
                else:
                    await route.handler(batch[0].event, context)
            await self._publish(context, batch, spans)
        except Exception as exc:
            kind = exc.code if isinstance(exc, ProcessingError) else type(exc).__qualname__
            for span in spans:
                span.set_attribute("error.type", kind)
                span.set_status(StatusCode.ERROR, _detail(exc))
                span.end()
            if len(batch) > 1:
                # Isolate the bad event: replay one at a time.
                for item in batch:
                    await self._handle([item])
                return
            await self._fail(batch[0], exc)
            return
        # The batch's effects hold: what is left (ending its spans, acking, counting) is
        # the loop's own work, a few microseconds an event. Done on the next turn of the
        # loop, it runs while the lane's next batch is already in its database
        # transaction rather than before that batch may start (measured on PostgreSQL:
        # 7 ms of a 45 ms cycle of 250 events). Turns run in order, so acks and counts
        # keep the batches' order; the spans end at the time the work did.
        asyncio.get_running_loop().call_soon(
            self._settle, batch, spans, time.perf_counter() - started, time.time_ns()
        )

    def _settle(
        self, batch: Sequence[_Item], spans: Sequence[Span], elapsed: float, ended: int
    ) -> None:
        for item, span in zip(batch, spans, strict=True):
            span.end(end_time=ended)
            self.stats.processed += 1
            self._finish(item.delivery)
        self._measure(batch, elapsed)

    def _attributes(self, event_type: str, outcome: str) -> dict[str, str]:
        key = (event_type, outcome)
        found = self._metric_attributes.get(key)
        if found is None:
            found = self._metric_attributes[key] = {
                "messaging.consumer.group.name": self.group,
                "messaging.rabbitmq.destination.routing_key": event_type,
                "outcome": outcome,
            }
        return found

    def _count(self, event_type: str, outcome: str, n: int = 1) -> None:
        instruments().events.add(n, self._attributes(event_type, outcome))

    def _measure(self, batch: Sequence[_Item], elapsed: float) -> None:
        meters = instruments()
        per_type: dict[str, int] = {}
        for item in batch:
            per_type[item.event.type] = per_type.get(item.event.type, 0) + 1
        for event_type, n in per_type.items():
            attributes = self._attributes(event_type, "processed")
            meters.events.add(n, attributes)
            # One point per processing operation, as the conventions define it: a
            # batch is one, and repeating its duration per delivery cost 6 us each.
            meters.process_duration.record(elapsed, attributes)

    async def _publish(self, context: Context, batch: Sequence[_Item], spans: list[Span]) -> None:
        if not context.emitted:
            return
        span_of = {item.event.id: span for item, span in zip(batch, spans, strict=True)}
        for event in context.emitted:
            parent = span_of.get(event.causationid or "", spans[0])
            with trace.use_span(parent, end_on_exit=False):
                await self.bus.publish(event)

    def _start_span(self, item: _Item) -> Span:
        message = item.delivery.message
        event = item.event
        parent = extract_context(message.headers, event.traceparent)
        name, attributes = self._spans.span(
            event.type,
            event.id,
            conversation_id=event.correlationid,
            delivery_tag=item.delivery.delivery_tag,
        )
        # The producer's context is the parent and, as the conventions ask of every
        # process span, a link too: it stays found where a backend drops parents
        # across traces.
        producer = trace.get_current_span(parent).get_span_context()
        return tracer().start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=(Link(producer),) if producer.is_valid else None,
        )

    # -- failure -----------------------------------------------------------------------

    async def _fail(self, item: _Item, exc: Exception) -> None:
        self.stats.failed += 1
        self._count(item.event.type, "failed")
        delivery = item.delivery
        in_place = self._in_place and is_log_delivery(delivery)
        held = in_place or self._held_retries
        attempt = (item.attempts if held else _attempt_of(delivery.message)) + 1
        code = exc.code if isinstance(exc, ProcessingError) else UNEXPECTED
        detail = _detail(exc)
        if isinstance(exc, PermanentError) or attempt >= self.settings.retry.max_attempts:
            await self._dead_letter(delivery, code, detail, attempts=attempt)
            return
        if not isinstance(exc, ProcessingError):
            log.warning("%s: %s on %s, will retry", self.queue, detail, item.event.id)
        if in_place:
            assert is_log_delivery(delivery)
            await self._retry_in_place(replace(item, attempts=attempt), delivery)
            return
        if held:
            await self._retry_held(replace(item, attempts=attempt))
            return
        delay_ms = self.settings.retry.delay_ms(attempt)
        headers = dict(item.delivery.message.headers)
        headers[ATTEMPT_HEADER] = attempt
        headers[ERROR_CODE_HEADER] = code
        headers[ERROR_DETAIL_HEADER] = detail
        retry = replace(item.delivery.message, headers=headers)
        try:
            target = retry_queue(self.queue, delay_ms, self.settings.queue_kind)
            await self.bus.transport.send_to_queue(target, retry)
        except BrokerUnavailable:
            await self._requeue(item.delivery)
            return
        self.stats.retried += 1
        self._count(item.event.type, "retried")
        self._finish(item.delivery)

    async def _retry_in_place(self, item: _Item, delivery: LogDelivery) -> None:
        """Handle the record again after the policy's delay for its attempt, holding its
        partition meanwhile; a revoked partition ends the wait, and the record is the
        next owner's to read again."""
        delivery.hold()
        try:
            if not await self._wait_unless_stale(
                delivery, self.settings.retry.delay(item.attempts)
            ):
                self._finish(delivery, acked=False)
                return
            self.stats.retried += 1
            self._count(item.event.type, "retried")
            await self._handle([item])
        finally:
            delivery.release()

    async def _retry_held(self, item: _Item) -> None:
        """Handle the delivery again after the policy's delay for its attempt, its lane
        waiting meanwhile; a channel that closes ends the wait, and the broker delivers
        the message again, ahead of what followed it."""
        delivery = item.delivery
        if not await self._wait_unless_stale(delivery, self.settings.retry.delay(item.attempts)):
            self._finish(delivery, acked=False)
            return
        self.stats.retried += 1
        self._count(item.event.type, "retried")
        await self._handle([item])

    @staticmethod
    async def _wait_unless_stale(delivery: Delivery, seconds: float) -> bool:
        deadline = asyncio.get_running_loop().time() + seconds
        while not delivery.stale:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, STALE_CHECK))
        return False

    async def _dead_letter(
        self, delivery: Delivery, code: str, detail: str, *, attempts: int
    ) -> None:
        message = delivery.message
        headers = dict(message.headers)
        headers.pop(ATTEMPT_HEADER, None)
        headers[ERROR_CODE_HEADER] = code
        headers[ERROR_DETAIL_HEADER] = detail
        headers[ATTEMPTS_HEADER] = attempts
        headers[ORIGIN_QUEUE_HEADER] = self.queue
        headers.setdefault(ROUTING_KEY_HEADER, message.routing_key)
        headers[FAILED_AT_HEADER] = datetime.now(UTC).isoformat()
        if is_log_delivery(delivery):
            headers.update(delivery.origin)
        # Named by the event, never by a message id the publisher's client made up.
        event_id, event_type = name_of(
            message.body,
            content_type=message.content_type,
            headers=message.headers,
            header_prefix=self._broker.header_prefix,
        )
        log.warning(
            "%s: dead-lettering %s %s: %s (%s)",
            self.queue,
            event_type or message.type or "message",
            event_id or message.message_id or "without id",
            code,
            detail,
        )
        try:
            await self.bus.transport.send_to_queue(
                dead_letter_queue(self.group), replace(message, headers=headers)
            )
        except BrokerUnavailable:
            await self._requeue(delivery)
            return
        self.stats.dead_lettered += 1
        # A refused message's type is whatever its producer wrote: only the catalog's
        # types become metric labels, so a hostile producer cannot mint new series.
        known = event_type in self.bus.codec.catalog
        self._count(event_type if known and event_type else "unknown", "dead_lettered")
        self._finish(delivery)

    async def _requeue(self, delivery: Delivery) -> None:
        # If the channel is gone the broker requeues the delivery by itself.
        with contextlib.suppress(BrokerUnavailable):
            await delivery.reject(requeue=True)
        self._finish(delivery, acked=False)


def _positions(batch: Sequence[_Item]) -> dict[LogPartition, int]:
    """Where each log partition of the batch resumes once the batch has taken effect.
    Taken before the handler runs: records settled meanwhile only make it more cautious."""
    applied: dict[LogPartition, tuple[LogDelivery, set[int]]] = {}
    for item in batch:
        delivery = item.delivery
        if is_log_delivery(delivery):
            found = applied.get(delivery.log_partition)
            if found is None:
                found = applied[delivery.log_partition] = (delivery, set())
            found[1].add(delivery.delivery_tag)
    return {where: delivery.resume_at(offsets) for where, (delivery, offsets) in applied.items()}


def _attempt_of(message: Message) -> int:
    value = message.headers.get(ATTEMPT_HEADER, 0)
    return value if isinstance(value, int) and value >= 0 else 0


def _detail(exc: BaseException) -> str:
    text = exc.detail if isinstance(exc, ProcessingError) else f"{type(exc).__name__}: {exc}"
    return one_line(text, MAX_DETAIL)
