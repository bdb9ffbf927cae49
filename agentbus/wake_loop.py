"""A background task that does a round of work when woken, and backs off while it fails.

The outbox relay, the notification mailer and the review webhook all work this way:
a commit wakes them; without a wake they look again every `idle` seconds (for what no
wake announces: another process's commit, a retry come due); a round that fails is
tried again after a delay that doubles up to `max_backoff`. A wake does not cut that
delay short, or a broker or mail server that is down would be retried at the rate of
commits; a stop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

log = logging.getLogger(__name__)


class Round(enum.Enum):
    DONE = "done"  # nothing left for now: wait for a wake, or `idle`
    MORE = "more"  # there may be more: go again at once
    FAILED = "failed"  # back off before the next round


# What `stop` does with the round in progress: lets it "finish", or "cancel"s it, for
# work that may hang on someone else's server.
OnStop = Literal["finish", "cancel"]


class WakeLoop:
    def __init__(
        self,
        work: Callable[[], Awaitable[Round]],
        *,
        name: str,
        idle: float,
        backoff: float,
        max_backoff: float,
        retry_on: tuple[type[BaseException], ...] = (),
        on_stop: OnStop = "finish",
    ) -> None:
        self.work = work
        self.name = name
        self.idle = idle
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_on = retry_on
        self.on_stop = on_stop
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"{self.name} loop")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        self._wake.set()
        if self.on_stop == "cancel":
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            await task

    async def _run(self) -> None:
        delay = self.backoff
        while not self._stop.is_set():
            self._wake.clear()
            outcome = await self._round(delay)
            if outcome is Round.FAILED:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.backoff
            if outcome is Round.MORE:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle)

    async def drain(self) -> None:
        """Rounds here and now until one finds nothing more (or fails, which is logged):
        what was committed before a stop goes out with it."""
        while await self._round(None) is Round.MORE:
            pass

    async def _round(self, delay: float | None) -> Round:
        try:
            return await self.work()
        except self.retry_on as exc:
            if delay is None:
                log.warning("%s: %s", self.name, exc)
            else:
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
            return Round.FAILED
