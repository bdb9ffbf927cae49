"""Coalesced acks: a finished prefix becomes one ack(multiple=True)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agentbus.acks import AckBatcher
from agentbus.transport.base import Message


@dataclass(eq=False)
class Channel:
    acks: list[tuple[int, bool]] = field(default_factory=list)


@dataclass
class FakeDelivery:
    """A stand-in for a transport delivery that records how it was acked."""

    delivery_tag: int
    channel: Channel
    message: Message = field(default_factory=lambda: Message(b"", "k"))
    queue: str = "q"
    redelivered: bool = False

    @property
    def channel_key(self) -> object:
        return self.channel

    @property
    def stale(self) -> bool:
        return False

    async def ack(self, *, multiple: bool = False) -> None:
        self.channel.acks.append((self.delivery_tag, multiple))

    async def reject(self, *, requeue: bool) -> None:
        raise AssertionError("not used")


async def test_out_of_order_completion_acks_the_finished_prefix_once() -> None:
    channel = Channel()
    batcher = AckBatcher(linger=0.001, batch=1000)
    deliveries = [FakeDelivery(tag, channel) for tag in range(1, 7)]
    for delivery in deliveries:
        batcher.track(delivery)
    for tag in (3, 1, 2, 5):
        batcher.done(deliveries[tag - 1])
    await asyncio.sleep(0.01)
    assert channel.acks == [(3, True)]  # 4 unfinished holds 5 back
    batcher.done(deliveries[3])
    batcher.done(deliveries[5])
    await batcher.close()
    assert channel.acks == [(3, True), (6, True)]
    assert batcher.outstanding == 0


async def test_settled_deliveries_are_skipped_and_never_acked() -> None:
    channel = Channel()
    batcher = AckBatcher(linger=0.001)
    deliveries = [FakeDelivery(tag, channel) for tag in range(1, 4)]
    for delivery in deliveries:
        batcher.track(delivery)
    batcher.done(deliveries[0])
    batcher.done(deliveries[1])
    batcher.settled(deliveries[2])  # rejected elsewhere: acking it would be an error
    await batcher.close()
    assert channel.acks == [(2, True)]


async def test_finished_work_behind_a_slow_delivery_is_acked_one_by_one() -> None:
    channel = Channel()
    batcher = AckBatcher(linger=0.001, batch=1000, spill=3)
    deliveries = [FakeDelivery(tag, channel) for tag in range(1, 6)]
    for delivery in deliveries:
        batcher.track(delivery)
    for delivery in deliveries[1:]:
        batcher.done(delivery)  # tag 1 is slow
    await asyncio.sleep(0.01)
    assert sorted(channel.acks) == [(2, False), (3, False), (4, False), (5, False)]
    batcher.done(deliveries[0])
    await batcher.close()
    assert channel.acks[-1] == (1, True)


async def test_channels_are_acked_separately() -> None:
    first, second = Channel(), Channel()
    batcher = AckBatcher(linger=0.001)
    a = FakeDelivery(1, first)
    b = FakeDelivery(1, second)
    batcher.track(a)
    batcher.track(b)
    batcher.done(b)
    batcher.done(a)
    await batcher.close()
    assert first.acks == [(1, True)]
    assert second.acks == [(1, True)]


@dataclass
class SlowAckDelivery(FakeDelivery):
    """Its ack waits until `written` is set, as an ack frame waits for the writer."""

    written: asyncio.Event = field(default_factory=asyncio.Event)
    second_ack: asyncio.Event = field(default_factory=asyncio.Event)

    async def ack(self, *, multiple: bool = False) -> None:
        await self.written.wait()
        await super().ack(multiple=multiple)
        if len(self.channel.acks) == 2:
            self.second_ack.set()


async def test_work_finished_during_a_flush_is_acked_when_it_ends_not_a_linger_later() -> None:
    channel = Channel()
    # A linger far longer than the test waits: only the flush's own round may ack.
    batcher = AckBatcher(linger=30.0, batch=2)
    written, second_ack = asyncio.Event(), asyncio.Event()
    deliveries = [
        SlowAckDelivery(tag, channel, written=written, second_ack=second_ack) for tag in range(1, 5)
    ]
    for delivery in deliveries:
        batcher.track(delivery)
    batcher.done(deliveries[0])
    batcher.done(deliveries[1])  # a batch's worth: flushes now, its ack held up
    await asyncio.sleep(0.01)
    batcher.done(deliveries[2])
    batcher.done(deliveries[3])  # asks for a flush while the first is writing
    await asyncio.sleep(0.01)
    written.set()
    await asyncio.wait_for(second_ack.wait(), timeout=1.0)
    assert channel.acks == [(2, True), (4, True)]
    assert batcher.outstanding == 0
    await batcher.close()
