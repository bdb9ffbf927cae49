"""LangGraph checkpointers for agent runs: SQLite by default, PostgreSQL with DATABASE_URL.

The SQLite checkpointer runs LangGraph's synchronous saver in a thread of its
own. (LangGraph's aiosqlite-based saver paid a thread hop per statement: about
90 per run, which capped an agent at ~50 runs a second however many were in
flight.) The operations of all runs queued when the thread takes its turn run
in one hop and one commit: a run makes about a dozen checkpoint operations, and
a commit each made the checkpoint file the bottleneck of a busy agent. Each
operation still returns only once its commit is done.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from langgraph.checkpoint.sqlite import SqliteSaver

from agentbus.settings import Settings
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


class Checkpoints:
    """Opens and closes the checkpointer of one agent with its service."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._stack = contextlib.AsyncExitStack()
        self.saver: Any = None

    async def open(self, settings: Settings) -> Any:
        if settings.database_url:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            # A pool that checks each connection before lending it: one connection
            # held for the life of the process would stay dead after a database restart.
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                settings.database_url,
                min_size=1,
                max_size=4,
                open=False,
                check=AsyncConnectionPool.check_connection,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            )
            await pool.open(wait=True, timeout=30)
            self._stack.push_async_callback(pool.close)
            saver: Any = AsyncPostgresSaver(pool)
            await saver.setup()
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            path = settings.data_dir / f"{self.agent.replace('-', '_')}_checkpoints.db"
            connection = sqlite3.connect(str(path), check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # A replay's checkpoints go with its folder: nothing to keep after a crash.
            synchronous = "OFF" if settings.sqlite_scratch else "NORMAL"
            connection.execute(f"PRAGMA synchronous={synchronous}")
            threaded = ThreadedSqliteSaver(connection, on_loop=settings.stores_on_loop)
            await threaded._off(threaded.setup)
            self._stack.callback(connection.close)
            self._stack.callback(threaded.shutdown)
            saver = threaded
        self.saver = saver
        return saver

    async def close(self) -> None:
        await self._stack.aclose()
        self.saver = None
