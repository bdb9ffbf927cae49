"""LangGraph's SQLite saver, made async by running its calls in one worker thread.

LangGraph's aiosqlite-based saver paid a thread hop per statement: about 90 per
run, which capped an agent at ~50 runs a second however many were in flight.
Here the operations of all runs queued when the thread takes its turn run in one
hop and one commit: a run makes about a dozen checkpoint operations, and a
commit each made the checkpoint file the bottleneck of a busy agent. Each
operation still returns only once its commit is done.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from langgraph.checkpoint.sqlite import SqliteSaver

from agentbus.store.worker import Job, LoopWorker, SerialWorker

T = TypeVar("T")


class ThreadedSqliteSaver(SqliteSaver):
    """LangGraph's SQLite saver, made async by running its calls in one worker thread."""

    def __init__(self, conn: sqlite3.Connection, *, on_loop: bool = False) -> None:
        super().__init__(conn)
        self._worker: SerialWorker | LoopWorker = (
            LoopWorker(self._run_jobs) if on_loop else SerialWorker("agentbus-ckpt", self._run_jobs)
        )
        self._in_turn = False

    async def _off(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await self._worker.submit(lambda: call(*args, **kwargs))
        return result

    @contextlib.contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        # Within a turn the commit waits for the turn's end (see the module's notes).
        with super().cursor(transaction=transaction and not self._in_turn) as cur:
            yield cur

    def _run_jobs(self, jobs: Sequence[Job]) -> None:
        self._in_turn = True
        try:
            for job in jobs:
                try:
                    job.result = job.call()
                except Exception as exc:
                    job.error = exc
        finally:
            self._in_turn = False
        try:
            self.conn.commit()
        except Exception as exc:
            for job in jobs:
                job.result = None
                job.error = exc

    async def aget_tuple(self, config: Any) -> Any:
        return await self._off(self.get_tuple, config)

    async def alist(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[Any]:
        found = await self._off(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self._off(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._off(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._off(self.delete_thread, thread_id)

    async def aget_delta_channel_history(
        self, *, config: Any, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return await self._off(
            lambda: self.get_delta_channel_history(config=config, channels=channels)
        )

    def shutdown(self) -> None:
        self._worker.shutdown()
