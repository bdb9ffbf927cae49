"""Coalesced acknowledgements: one `ack(multiple=True)` for a run of finished deliveries.

Per-message ack frames are most of what separates a Python consumer from the
broker's ceiling. Deliveries finish out of order (they run in parallel lanes), so
the batcher acks the longest finished prefix in delivery-tag order, per channel.
When a slow delivery holds the prefix back and finished ones pile up behind it,
those are acked one by one so the prefetch window cannot fill with finished work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum

from agentbus.errors import BrokerUnavailable
from agentbus.transport.base import Delivery

log = logging.getLogger(__name__)


class _State(Enum):
    PENDING = 0
    DONE = 1  # finished, to be acked
    SETTLED = 2  # settled by other means (rejected): skip, never ack


class _Slot:
    __slots__ = ("delivery", "state")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.state = _State.PENDING


class AckBatcher:
    def __init__(self, *, linger: float = 0.002, batch: int = 64, spill: int = 100) -> None:
        self._linger = linger
        self._batch = batch
        self._spill = spill
        self._channels: dict[object, deque[_Slot]] = {}
        self._slots: dict[tuple[object, int], _Slot] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_is_immediate = False
        self._done_waiting = 0
        self._flushing: asyncio.Task[None] | None = None
        self._flush_again = False

    @property
    def outstanding(self) -> int:
        return len(self._slots)

    def track(self, delivery: Delivery) -> None:
        slot = _Slot(delivery)
        key = delivery.channel_key
        slots = self._channels.get(key)
        if slots is None:  # not setdefault: that builds a deque per delivery
            slots = self._channels[key] = deque()
        slots.append(slot)
        self._slots[(key, delivery.delivery_tag)] = slot

    def done(self, delivery: Delivery) -> None:
        self._mark(delivery, _State.DONE)

    def settled(self, delivery: Delivery) -> None:
        """The delivery was rejected or requeued elsewhere: forget it."""
        self._mark(delivery, _State.SETTLED)

    def _mark(self, delivery: Delivery, state: _State) -> None:
        slot = self._slots.get((delivery.channel_key, delivery.delivery_tag))
        if slot is None or slot.state is not _State.PENDING:
            return
        slot.state = state
        self._done_waiting += 1
        if self._done_waiting >= self._batch:
            self._schedule(0.0)
        else:
            self._schedule(self._linger)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            # Once a batch's worth is waiting, every later delivery of the batch asks
            # for an immediate flush too: one is enough (a timer each cost more than
            # the rest of the bookkeeping).
            if delay > 0 or self._timer_is_immediate:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_is_immediate = delay <= 0
        self._timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is not None and not self._flushing.done():
            # The running flush goes round once more when its acks are written,
            # rather than the work waiting out another linger behind it.
            self._flush_again = True
            return
        self._flushing = asyncio.get_running_loop().create_task(self._flush_rounds())

    async def _flush_rounds(self) -> None:
        while True:
            self._flush_again = False
            await self.flush()
            if not self._flush_again:
                return

    async def flush(self) -> None:
        """Ack every finished prefix now."""
        self._done_waiting = 0
        for key in list(self._channels):
            slots = self._channels[key]
            if slots and slots[0].delivery.stale:
                # The channel closed, and with it every unacked delivery on it: the
                # broker delivers them again and consumers dedup by event id.
                log.warning("channel closed with %d deliveries unacked; they return", len(slots))
                self._forget(key)
                continue
            last_done: _Slot | None = None
            while slots and slots[0].state is not _State.PENDING:
                slot = slots.popleft()
                del self._slots[(key, slot.delivery.delivery_tag)]
                if slot.state is _State.DONE:
                    last_done = slot
            waiting = [s for s in slots if s.state is _State.DONE]
            if not slots:
                del self._channels[key]
            if last_done is not None and not await self._ack(
                last_done.delivery, multiple=True, key=key
            ):
                continue
            if len(waiting) >= self._spill:
                for slot in waiting:
                    slot.state = _State.SETTLED
                    if not await self._ack(slot.delivery, multiple=False, key=key):
                        break

    async def _ack(self, delivery: Delivery, *, multiple: bool, key: object) -> bool:
        try:
            await delivery.ack(multiple=multiple)
        except BrokerUnavailable as exc:
            # The channel went while acking: as above, its deliveries return.
            log.warning("ack lost with its channel (%s); the broker will redeliver", exc)
            self._forget(key)
            return False
        return True

    def _forget(self, key: object) -> None:
        for slot in self._channels.pop(key, deque()):
            self._slots.pop((key, slot.delivery.delivery_tag), None)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await self._flushing
        await self.flush()
