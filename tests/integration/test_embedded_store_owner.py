"""The embedded vector store belongs to one process: a second one refuses at start.

Before, the engine locked a shard only when it was first loaded, so a second
process started fine and then failed every write with `WouldBlock`, retrying and
dead-lettering its triggers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentbus.errors import ConfigurationError
from agentbus.memory.edge import EdgeStore

HOLD = """
import sys, time
from pathlib import Path
from agentbus.memory.edge import EdgeStore
store = EdgeStore(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def hold_in_another_process(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


async def test_a_second_process_is_refused_until_the_owner_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "vectors"
    holder = hold_in_another_process(path)
    try:
        with pytest.raises(ConfigurationError, match="QDRANT_URL"):
            EdgeStore(path)
    finally:
        holder.kill()
        holder.wait()
    # The claim dies with its holder: no stale lock file to clean up by hand.
    store = EdgeStore(path)
    await store.close()
    again = EdgeStore(path)  # closing gave the folder back
    await again.close()


async def test_agentbus_run_on_a_held_store_exits_at_start_with_one_line(
    amqp_url: str, tmp_path: Path
) -> None:
    holder = hold_in_another_process(tmp_path / "vectors")
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "AGENTBUS_EXCHANGE": f"agentbus.test.{uuid.uuid4().hex[:10]}",
        "AGENTBUS_DATA": str(tmp_path),
        "AGENTBUS_QUEUE_TYPE": "classic",
    }
    env.pop("QDRANT_URL", None)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "run",
            "restock-agent",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert process.returncode not in (0, None)
    assert "Traceback" not in stderr.decode()
    assert len(lines) == 1, lines
    assert "open in another process" in lines[0]
    assert "QDRANT_URL" in lines[0]
