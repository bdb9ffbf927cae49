"""A worker thread that takes everything queued since its last turn in one hop.

Concurrent callers (an agent's runs, a service's lanes) each hand the database a
small unit of work. One hop per unit pays a thread switch, a wake-up of the event
loop and, for a write, a commit, and on SQLite every commit writes the pages it
touched again. Here the thread takes all queued jobs at once, and the owner runs
them together (the writes in one transaction), then wakes the loop once for all.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any


class Job:
    """One queued call and, once run, its result or error."""

    __slots__ = ("call", "error", "future", "kind", "result")

    def __init__(self, call: Callable[..., Any], kind: str, future: asyncio.Future[Any]) -> None:
        self.call = call
        self.kind = kind
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


# Runs a turn's jobs in order, setting each one's result or error.
RunJobs = Callable[[Sequence[Job]], None]


ALONE = "alone"  # a job run by itself, between turns


class SerialWorker:
    """One thread running queued jobs in the order they were submitted, a turn at a time."""

    def __init__(self, name: str, run_jobs: RunJobs) -> None:
        self._run_jobs = run_jobs
        self._name = name
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, call: Callable[..., Any], kind: str = "") -> asyncio.Future[Any]:
        if self._thread is None:
            self._start()
        future = asyncio.get_running_loop().create_future()
        self._queue.put(Job(call, kind, future))
        return future

    def call_alone(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `call()` in the worker's thread by itself, after what is queued already."""
        return self.submit(call, ALONE)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while True:  # everything queued meanwhile joins this turn
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._turn(jobs)

    def _turn(self, jobs: list[Job]) -> None:
        run_turn(jobs, self._run_jobs)
        by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for job in jobs:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, settled)

    def shutdown(self) -> None:
        """Finish what is queued, then stop the thread."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()
            self._thread = None


class LoopWorker:
    """Runs queued jobs on the event loop itself, one turn per pass of the loop.

    For databases that no other process or thread shares, such as those of an
    offline replay: there the hand-offs to a thread cost more than the work, and
    blocking the loop for a unit of work holds up nothing else.
    """

    def __init__(self, run_jobs: RunJobs) -> None:
        self._run_jobs = run_jobs
        self._queued: list[Job] = []

    def submit(self, call: Callable[..., Any], kind: str = "") -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.append(Job(call, kind, future))
        if len(self._queued) == 1:
            # After the callbacks ready now: the jobs they queue join this turn.
            loop.call_soon(self._turn)
        return future

    def call_alone(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        return self.submit(call, ALONE)

    def _turn(self) -> None:
        jobs, self._queued = self._queued, []
        run_turn(jobs, self._run_jobs)
        settle(jobs)

    def shutdown(self) -> None:
        """Nothing to stop: the loop runs the jobs."""


def run_turn(jobs: Sequence[Job], run_jobs: RunJobs) -> None:
    """Run one turn: runs of ordinary jobs by `run_jobs`, each ALONE job by itself."""
    start = 0
    while start < len(jobs):
        end = start
        while end < len(jobs) and jobs[end].kind != ALONE:
            end += 1
        if end > start:
            try:
                run_jobs(jobs[start:end])
            except BaseException as exc:  # to the callers, not lost with the thread
                for job in jobs[start:end]:
                    job.error = exc
        if end < len(jobs):
            alone = jobs[end]
            try:
                alone.result = alone.call()
            except BaseException as exc:  # to the caller, not lost with the thread
                alone.error = exc
            end += 1
        start = end


def settle(jobs: Sequence[Job]) -> None:
    """Hand each job's outcome to its waiting caller (on the caller's loop)."""
    for job in jobs:
        if job.future.cancelled():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
