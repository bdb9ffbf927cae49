"""LangGraph checkpointers for agent runs: SQLite by default, PostgreSQL with DATABASE_URL.

The SQLite checkpointer runs LangGraph's synchronous saver in a thread of its own
(`agentbus.agent.sqlite_checkpoints`). Both are imported as an agent's service
opens them: LangGraph takes about a second to import, and a process that loads an
application without running its agents (a CLI command, another service) never needs it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from agentbus.settings import Settings


class Checkpoints:
    """Opens and closes the checkpointer of one agent with its service."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._stack = contextlib.AsyncExitStack()
        self.saver: Any = None
        # What the chosen saver's driver raises: a database's failure, not a run's.
        self.driver_errors: tuple[type[Exception], ...] = ()

    async def open(self, settings: Settings) -> Any:
        if settings.database_url:
            import psycopg
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
            self.driver_errors = (psycopg.Error,)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            path = settings.data_dir / f"{self.agent.replace('-', '_')}_checkpoints.db"
            connection = sqlite3.connect(str(path), check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # A replay's checkpoints go with its folder: nothing to keep after a crash.
            synchronous = "OFF" if settings.sqlite_scratch else "NORMAL"
            connection.execute(f"PRAGMA synchronous={synchronous}")
            from agentbus.agent.sqlite_checkpoints import ThreadedSqliteSaver

            threaded = ThreadedSqliteSaver(connection, on_loop=settings.stores_on_loop)
            await threaded._off(threaded.setup)
            self._stack.callback(connection.close)
            self._stack.callback(threaded.shutdown)
            saver = threaded
            self.driver_errors = (sqlite3.Error,)
        self.saver = saver
        return saver

    async def close(self) -> None:
        await self._stack.aclose()
        self.saver = None
