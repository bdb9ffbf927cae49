"""`agentbus rebuild SERVICE FILE --check`: a recorded run rebuilt gives the live state.

The run is the shop in one process (see `shop.py`) on SQLite files; its observer saw
every event in the order the services did, which is what `agentbus record` writes.
The command runs as a process against those files, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentbus.envelope import EventCodec
from events import CATALOG
from tests.e2e.shop import EventFactory, Shop

HOUR = 3600.0


def agentbus(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AMQP_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_URL")
    }
    environ.update(AGENTBUS_APP="consumers.app:app", AGENTBUS_DATA=str(data))
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the live data folder, the recording of the run that filled it)."""
    folder = tmp_path_factory.mktemp("run")
    data = folder / "data"
    asyncio.run(_run(data))
    return data, folder / "run.jsonl"


async def _run(data: Path) -> None:
    f = EventFactory()
    async with Shop(data, payment_limit=None, shipping_delay=HOUR) as shop:
        await shop.publish(f.product("A", reorder_point=4), f.received("A", 10), f.received("B", 3))
        await shop.publish(
            f.order("o-paid", [("A", 3, "2.00"), ("B", 1, "1.00")]),
            f.order("o-short", [("B", 9, "1.00")]),
            f.order("o-big", [("A", 1, "6000.00")]),
        )
        await shop.publish(f.order("o-refunded", [("A", 2, "2.00")]))
        await shop.publish(f.cancel("o-refunded"), f.adjusted("B", -1), f.adjusted("A", -99))
        await shop.publish(f.cancel("o-early"), f.order("o-early", [("A", 1, "1.00")]))
        codec = EventCodec(CATALOG)
        recording = data.parent / "run.jsonl"
        recording.write_bytes(b"".join(codec.encode(event) + b"\n" for event in shop.seen))
        assert shop.one("inventory.returned", "o-refunded")
        assert await shop.stock("A") == (7, 0, 7)
        assert [d.error_code for d in await shop.dead_letters("inventory")] == ["negative_stock"]


@pytest.mark.parametrize("service", ["inventory", "orders", "payments", "shipping"])
def test_a_rebuilt_state_equals_the_live_one(recorded: tuple[Path, Path], service: str) -> None:
    data, recording = recorded
    result = agentbus("rebuild", service, str(recording), "--check", data=data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "equal to the live state" in result.stdout


def test_a_state_changed_by_hand_is_named(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    data, recording = recorded
    changed = tmp_path / "data"
    changed.mkdir()
    with (
        sqlite3.connect(data / "inventory.db") as live,
        sqlite3.connect(changed / "inventory.db") as copy,
    ):
        live.backup(copy)
    with sqlite3.connect(changed / "inventory.db") as database:
        database.execute("UPDATE stock SET on_hand = on_hand + 5 WHERE sku = 'B'")
        database.execute("DELETE FROM reservations WHERE order_id = 'o-short'")

    result = agentbus("rebuild", "inventory", str(recording), "--check", data=changed)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stock[B].on_hand: rebuilt 1, live 6" in result.stdout
    assert "reservations[o-short]: only in the rebuilt state" in result.stdout
    assert "2 difference(s)" in result.stdout


def test_a_rebuild_without_check_keeps_its_database(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    _, recording = recorded
    into = tmp_path / "rebuilt"
    result = agentbus("rebuild", "inventory", str(recording), "--into", str(into), data=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 refused" in result.stdout, "the adjustment below zero, as live"
    with sqlite3.connect(into / "data" / "inventory.db") as database:
        rows = database.execute("SELECT sku, on_hand, reserved FROM stock ORDER BY sku").fetchall()
    assert rows == [("A", 7, 0), ("B", 1, 0)]


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_bad_input_is_one_line(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    data, recording = recorded
    missing = tmp_path / "missing.jsonl"
    broken = tmp_path / "broken.jsonl"
    broken.write_text(recording.read_text().splitlines()[0] + "\n{not json\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        (("rebuild", "warehouse", str(recording)), data, "warehouse"),
        (("rebuild", "review", str(recording)), data, "cannot be rebuilt"),
        (("rebuild", "inventory", str(missing)), data, "missing.jsonl"),
        (("rebuild", "inventory", str(broken)), data, "broken.jsonl:2"),
        (
            ("rebuild", "inventory", str(recording), "--check"),
            tmp_path / "nowhere",
            "no live database",
        ),
        (
            ("rebuild", "inventory", str(recording), "--into", str(full)),
            data,
            "not an empty folder",
        ),
    ]
    # Separate processes that change nothing: run side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda case: agentbus(*case[0], data=case[1]), cases))
    for (_, _, needle), result in zip(cases, results, strict=True):
        _one_line_error(result, needle)


def test_a_recording_holding_events_twice_rebuilds_the_same_state(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    """A recorder killed between writing a line and acking it writes the line again when
    the broker redelivers it: rebuild takes the copy for the duplicate it is, as the live
    service's inbox does."""
    data, recording = recorded
    lines = recording.read_text().splitlines(keepends=True)
    doubled = tmp_path / "doubled.jsonl"
    # Each line at once again, and the whole run once more after it.
    doubled.write_text("".join(line + line for line in lines) + "".join(lines))
    for service in ("inventory", "orders"):
        result = agentbus("rebuild", service, str(doubled), "--check", data=data)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "equal to the live state" in result.stdout
