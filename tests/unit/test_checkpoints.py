"""The SQLite checkpointer: operations of concurrent runs share a hop and a commit."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from agentbus.agent.checkpoints import Checkpoints
from agentbus.settings import Settings


async def test_each_operation_is_durable_when_it_returns_however_many_share_a_turn(
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(Settings.from_env({}), data_dir=tmp_path, database_url=None)
    checkpoints = Checkpoints("bench-agent")
    saver: Any = await checkpoints.open(settings)
    path = tmp_path / "bench_agent_checkpoints.db"
    try:
        runs = [f"run-{n}" for n in range(50)]

        async def one_run(thread_id: str) -> str:
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            saved = await saver.aput(config, empty_checkpoint(), {"step": 0}, {})
            await saver.aput_writes(saved, [("answer", thread_id)], task_id="t1")
            # Seen from another connection at once: the commit came before the answer.
            with sqlite3.connect(path) as other:
                found = other.execute(
                    "SELECT count(*) FROM writes WHERE thread_id = ?", (thread_id,)
                ).fetchone()
            assert found == (1,), thread_id
            got = await saver.aget_tuple(saved)
            return str(got.pending_writes[0][2])

        answers = await asyncio.gather(*(one_run(r) for r in runs))
        assert answers == runs
        with sqlite3.connect(path) as other:
            count = other.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()
        assert count == (50,)
    finally:
        await checkpoints.close()
