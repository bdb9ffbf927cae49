"""Calls in worker processes, as many at once as asked: replays are bound to one core
each, so a process of their own is what lets them use the others.

Workers are spawned (the caller's loop has threads, which do not fork) and ignore
SIGINT: Ctrl-C reaches the whole process group, and the caller decides what it means.
When the caller stops waiting (interrupted, or a call failed), the workers still
running are terminated at once rather than left to finish their call.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from agentbus.host import tune_gc_once

T = TypeVar("T")

_STARTED = "started"
_reports: Any = None  # in a worker: its queue back to the caller


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def report(message: Any) -> None:
    """From inside a worker: hand `message` to the caller's `on_report`."""
    _reports.put(("report", message))


async def run_in_workers(
    calls: Sequence[Callable[[], T]], jobs: int, on_report: Callable[[Any], None]
) -> list[T]:
    """Each call (picklable: a module-level function, or a partial of one) in one of
    `jobs` worker processes; their results in the calls' order."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    workers: set[int] = set()
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_started, initargs=(reports,)
    )
    everything: asyncio.Future[list[T]] | None = None
    try:
        everything = asyncio.gather(*(loop.run_in_executor(pool, call) for call in calls))
        while not everything.done():
            _drain(reports, on_report, workers)
            await asyncio.wait([everything], timeout=0.2)
        _drain(reports, on_report, workers)
        return everything.result()
    except BaseException:
        if everything is not None:
            everything.cancel()
            # Its children's cancellation ends it with an error nobody waits for any more.
            everything.add_done_callback(lambda done: done.cancelled() or done.exception())
        pool.shutdown(wait=False, cancel_futures=True)
        _drain(reports, on_report, workers)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _drain(reports: Any, on_report: Callable[[Any], None], workers: set[int]) -> None:
    while True:
        try:
            kind, message = reports.get_nowait()
        except queue.Empty:
            return
        if kind == _STARTED:
            workers.add(message)
        else:
            on_report(message)


def _started(reports: Any) -> None:
    global _reports
    _reports = reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reports.put((_STARTED, os.getpid()))
    tune_gc_once()  # a worker lives as long as the caller's run, in a process of its own
