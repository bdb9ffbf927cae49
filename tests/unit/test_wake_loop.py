"""The loop behind the outbox relay, the mailer and the review webhook: a round when
woken, one every `idle` without a wake, growing pauses while rounds fail, and a stop
that does not wait out a pause."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from agentbus.wake_loop import OnStop, Round, WakeLoop


class Work:
    """Rounds that answer from a script, and when each one ran."""

    def __init__(self, *outcomes: Round | type[BaseException], then: Round = Round.DONE) -> None:
        self.outcomes = list(outcomes)
        self.then = then
        self.times: list[float] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> Round:
        self.times.append(asyncio.get_running_loop().time())
        await self.release.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else self.then
        if isinstance(outcome, type):
            raise outcome("down")
        return outcome


def loop_of(
    work: Work,
    *,
    idle: float = 10.0,
    backoff: float = 0.2,
    max_backoff: float = 0.4,
    on_stop: OnStop = "finish",
) -> WakeLoop:
    return WakeLoop(
        work,
        name="test",
        idle=idle,
        backoff=backoff,
        max_backoff=max_backoff,
        retry_on=(OSError,),
        on_stop=on_stop,
    )


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the loop under test changes it
            await asyncio.sleep(0.005)


async def test_a_wake_runs_a_round_at_once_and_more_runs_again_without_waiting() -> None:
    work = Work(Round.DONE, Round.MORE, Round.MORE, Round.DONE)
    loop = loop_of(work)
    loop.start()
    await until(lambda: len(work.times) == 1)
    await asyncio.sleep(0.05)
    assert len(work.times) == 1, "no round without a wake before `idle`"
    loop.wake()
    await until(lambda: len(work.times) == 4)
    assert work.times[3] - work.times[1] < 0.1
    await loop.stop()
    assert len(work.times) == 4, "a stop while idle runs no round (the owner drains)"


async def test_without_a_wake_a_round_comes_every_idle() -> None:
    work = Work()
    loop = loop_of(work, idle=0.05)
    loop.start()
    await until(lambda: len(work.times) >= 3)
    await loop.stop()
    assert work.times[2] - work.times[0] >= 0.09


async def test_failed_rounds_pause_longer_each_time_and_a_wake_does_not_cut_a_pause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work(OSError, Round.FAILED, OSError, Round.DONE)
    loop = loop_of(work)
    loop.start()
    await until(lambda: len(work.times) == 1)
    for _ in range(10):  # writers committing while the broker is down
        loop.wake()
        await asyncio.sleep(0.01)
    assert len(work.times) == 1
    await until(lambda: len(work.times) == 4, timeout=3)
    await loop.stop()
    pauses = [round(b - a, 1) for a, b in zip(work.times, work.times[1:], strict=False)]
    assert pauses == [0.2, 0.4, 0.4], "doubling from `backoff`, up to `max_backoff`"
    assert "test: down; retrying in 0.2s" in caplog.text


async def test_a_stop_ends_a_pause_at_once() -> None:
    work = Work(then=Round.FAILED)
    loop = loop_of(work, backoff=30.0, max_backoff=30.0)
    loop.start()
    await until(lambda: len(work.times) == 1)
    async with asyncio.timeout(1):
        await loop.stop()
    assert not loop.running


async def test_a_stop_lets_the_round_finish_or_cancels_it() -> None:
    finishing = Work()
    finishing.release.clear()
    loop = loop_of(finishing)
    loop.start()
    await until(lambda: len(finishing.times) == 1)
    stopping = asyncio.ensure_future(loop.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "it waits for the round in progress"
    finishing.release.set()
    await stopping

    hanging = Work()
    hanging.release.clear()
    loop = loop_of(hanging, on_stop="cancel")
    loop.start()
    await until(lambda: len(hanging.times) == 1)
    async with asyncio.timeout(1):
        await loop.stop()


async def test_drain_runs_rounds_until_one_finds_nothing_more_even_unstarted() -> None:
    work = Work(Round.MORE, Round.MORE, Round.DONE, Round.MORE)
    await loop_of(work).drain()
    assert len(work.times) == 3

    failing = Work(Round.MORE, OSError)
    await loop_of(failing).drain()
    assert len(failing.times) == 2, "a failure ends the drain, logged rather than raised"
