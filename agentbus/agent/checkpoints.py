"""LangGraph checkpointers for agent runs: SQLite by default, PostgreSQL with DATABASE_URL."""

from __future__ import annotations

import contextlib
from typing import Any

from agentbus.settings import Settings


class Checkpoints:
    """Opens and closes the checkpointer of one agent with its service."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._stack = contextlib.AsyncExitStack()
        self.saver: Any = None

    async def open(self, settings: Settings) -> Any:
        if settings.database_url:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            url = settings.database_url
            saver = await self._stack.enter_async_context(AsyncPostgresSaver.from_conn_string(url))
        else:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            settings.data_dir.mkdir(parents=True, exist_ok=True)
            path = settings.data_dir / f"{self.agent.replace('-', '_')}_checkpoints.db"
            saver = await self._stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(str(path))  # type: ignore[arg-type]
            )
        await saver.setup()
        self.saver = saver
        return saver

    async def close(self) -> None:
        await self._stack.aclose()
        self.saver = None
