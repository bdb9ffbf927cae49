"""benchmarks/outside_worlds.py writes recordings the project's own codec accepts as the
contract's events, and reports every contender for every shape: the full run (ten seeds
a shape) is in benchmarks/README.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentbus.envelope import EventCodec
from agentbus.recording import read_recording
from events import CATALOG

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "outside_worlds.py"


def test_the_outside_worlds_are_contract_events_and_every_policy_is_scored(
    tmp_path: Path,
) -> None:
    shapes = ["fall", "revised"]
    arguments = ["--seeds", "1", "--shapes", ",".join(shapes), "--keep", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)

    recordings = sorted((tmp_path / "worlds").glob("*.jsonl"))
    assert [r.stem for r in recordings] == ["fall-1", "revised-1"]
    codec = EventCodec(CATALOG)
    for recording in recordings:
        events = [recorded.event for recorded in read_recording(recording, codec)]
        kinds = {event.type for event in events}
        assert {"product.upserted", "stock.received", "order.created"} <= kinds
    revised = [
        e for e in read_recording(recordings[1], codec) if e.event.type == "product.upserted"
    ]
    assert len({e.event.data.reorder_point for e in revised}) == 2, "the catalog changes halfway"

    for shape in shapes:
        costs = report["cost"][shape]
        assert set(costs) == {"agent", "agent_no_memory", "forecaster", "reorder_point"}
        assert all(cost >= 0 for cost in costs.values())
        assert sum(costs.values()) > 0, "nothing was scored"
