"""A chaos run's recording, checked: `agentbus rebuild inventory REC --check` must find the
live state exactly, and name the row once one is changed by hand.

The recorder is `agentbus record --queue` in a process of its own, SIGKILLed and restarted
like the services and through the broker's faults, appending to one file; so the file may
hold an event more than once, under one id, and must lack none.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentbus.envelope import EventCodec
from agentbus.recording import scan_recording
from agentbus.store import open_database
from events import CATALOG

TAMPERED_BY = 1  # units of stock added by hand to one SKU's on_hand


def recorder_command(path: Path, queue: str) -> tuple[str, ...]:
    return ("record", "--out", str(path), "--queue", queue)


async def check_rebuild(
    env: dict[str, str],
    recording: Path,
    data_dir: Path,
    database_url: str | None,
    published: Collection[str],
    *,
    tamper: bool = True,
) -> dict[str, Any]:
    """Rebuild against the quiet live database, change one stock row, rebuild again;
    `published`: the ids of the events the run published, which the recording must hold.
    Without `tamper` only the first rebuild runs."""
    scanned = await asyncio.to_thread(scan_recording, recording, EventCodec(CATALOG))
    ids = [recorded.event.id for recorded in scanned.events]
    missing = set(published) - set(ids)
    checked = await _rebuild(env, recording)
    found = {
        "recorded_lines": len(ids),
        "recorded_duplicates": len(ids) - len(set(ids)),
        "skipped_entries": len(scanned.skipped),
        "published_not_recorded": len(missing),
        "check": checked,
    }
    if not tamper:
        return found
    sku = await _tamper(data_dir, database_url)
    return {**found, "tampered_sku": sku, "check_after_tamper": await _rebuild(env, recording)}


async def _rebuild(env: dict[str, str], recording: Path) -> dict[str, Any]:
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentbus",
        "rebuild",
        "inventory",
        str(recording),
        "--check",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 600)
    try:
        summary: dict[str, Any] = json.loads(out)
    except ValueError:
        summary = {"stderr": err.decode(errors="replace")[-800:]}
    return {
        "exit_code": process.returncode,
        "seconds": round(time.monotonic() - began, 1),
        "events": summary.get("events"),
        "dead_letters": summary.get("dead_letters"),
        "differences": summary.get("differences"),
        **({"stderr": summary["stderr"]} if "stderr" in summary else {}),
    }


async def _tamper(data_dir: Path, database_url: str | None) -> str:
    """Add stock by hand to the first SKU of the live inventory; returns the SKU."""
    from consumers.inventory.tables import stock

    database = open_database("inventory", EventCodec(CATALOG), url=database_url, data_dir=data_dir)

    def change(connection: sa.Connection) -> str:
        sku: str = connection.execute(sa.select(sa.func.min(stock.c.sku))).scalar_one()
        connection.execute(
            sa.update(stock).where(stock.c.sku == sku).values(on_hand=stock.c.on_hand + TAMPERED_BY)
        )
        return sku

    try:
        return await database.run(lambda tx: change(tx.connection))
    finally:
        await database.close()
