"""The eval suite end to end: simulated recordings, offline replay, report, and the gate."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agentbus.app import EvalOptions
from agentbus.envelope import EventCodec
from agentbus.telemetry import use_tracer_provider
from agents.registry import restock_agent
from agents.restock import policy
from agents.restock.proposal import RestockProposal
from evals.families import FAMILIES, GATE_SEEDS, HELD_OUT_SEEDS, TRAINING_SEEDS, from_spec
from evals.replay import inputs_of, replay
from evals.run import BASELINE, FIXTURES, GATE, HELD_OUT, evaluate, load_cases
from evals.scenarios import scenario
from evals.simulate import record_scenario
from events import CATALOG


def suggestions(events: list[Any]) -> list[tuple[str, str, int, str]]:
    return sorted(
        (e.id, e.data.sku, e.data.quantity, str(e.data.trigger_event_id))
        for e in events
        if e.type == "restock.recommended"
    )


async def test_a_scenario_records_to_the_same_bytes_every_time(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    storm = scenario("storm")
    # Traced, as a deployment would be: every run has trace ids of its own.
    use_tracer_provider(TracerProvider())
    try:
        a = await record_scenario(storm, first)
        b = await record_scenario(storm, second)
    finally:
        use_tracer_provider(None)
    assert a.read_bytes() == b.read_bytes()
    assert b"restock.recommended" in a.read_bytes()


async def test_replaying_a_committed_fixture_reproduces_its_suggestions() -> None:
    [case] = load_cases([FIXTURES / "rejected_history.jsonl"])
    replayed = await replay(case.events, restock_agent)
    recorded = suggestions(case.events)
    assert len(recorded) >= 3
    assert suggestions(replayed.events) == recorded


async def test_an_agent_sees_only_the_past() -> None:
    """Cutting the recording right after a trigger changes nothing in its suggestion."""
    [case] = load_cases([FIXTURES / "promotion.jsonl"])
    full = await replay(case.events, restock_agent)
    made = [e for e in full.events if e.type == "restock.recommended"]
    late = made[len(made) // 2]
    cut = [e for e in case.events if e.time <= late.time]
    shortened = await replay(cut, restock_agent)
    again = {e.id: e.data for e in shortened.events if e.type == "restock.recommended"}
    assert again[late.id] == late.data


def test_every_committed_fixture_is_a_plain_recording_of_valid_events() -> None:
    codec = EventCodec(CATALOG)
    fixtures = sorted(FIXTURES.glob("*.jsonl"))
    assert len(fixtures) >= 10
    for path in fixtures:
        lines = path.read_bytes().splitlines()
        events = [codec.decode(line) for line in lines]
        assert inputs_of(events), path
        assert len(inputs_of(events)) < len(events), path  # services' events recorded too


def test_world_specs_split_the_seeds_and_make_the_same_world_every_time() -> None:
    held_out = from_spec(HELD_OUT)
    assert {w.family for w in held_out} == {f.name for f in FAMILIES}
    assert {w.seed for w in held_out} == set(HELD_OUT_SEEDS)
    assert not set(HELD_OUT_SEEDS) & (set(TRAINING_SEEDS) | set(GATE_SEEDS))
    assert {w.family for w in from_spec(GATE)} == {f.name for f in FAMILIES}
    first, again = held_out[0].inputs(), from_spec(HELD_OUT)[0].inputs()
    assert [e.id for e in first] == [e.id for e in again]
    # What a shop's outside sends, as a world built from the contract alone: replay makes
    # the services' events again.
    assert inputs_of(first) == first


async def test_eval_writes_the_report_and_passes_the_gate_on_the_committed_fixtures(
    tmp_path: Path,
) -> None:
    # The hand-made scenarios, the agent against the formula it must beat; the baselines
    # that only frame the families (forecaster, agent without memory) run on the gate
    # worlds below, and on everything in `agentbus eval` (figures in benchmarks/README.md).
    code = await evaluate(
        EvalOptions(
            paths=(FIXTURES,),
            out=tmp_path,
            baseline=BASELINE,
            contenders=("reorder_point", "agent"),
            jobs=0,
        )
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["scenarios"]) >= {"promotion", "yearly", "lead_time_grew", "injection"}
    for entry in results["scenarios"].values():
        assert entry["contenders"]["agent"]["passed"], entry
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= len(results["scenarios"]) * 2
    assert results["substitutes"]["top3_rate"] == 1.0
    assert "<h2>Substitutes</h2>" in html
    # Where history matters the agent with memory beats the formula, and it is no worse
    # anywhere else.
    for name, margin in results["margins"].items():
        if name in results["families"] or "family" in results["scenarios"].get(name, {}):
            continue  # judged over its family's worlds, not alone
        if margin["history_matters"]:
            assert margin["agent_vs_reorder_point"] > 0, (name, margin)
        else:
            assert margin["agent_vs_reorder_point"] >= 0, (name, margin)


async def test_the_gate_worlds_pass_with_every_contender(tmp_path: Path) -> None:
    # The gate's world of each family (a product from each gate seed); the held-out
    # worlds are `agentbus eval` (minutes; figures in benchmarks/README.md).
    code = await evaluate(
        EvalOptions(
            paths=(GATE,),
            out=tmp_path,
            baseline=BASELINE,
            contenders=("reorder_point", "forecaster", "agent_no_memory", "agent"),
            jobs=0,
        )
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Families</h2>" in html
    assert set(results["families"]) == {f.name for f in FAMILIES}
    totals: dict[str, float] = {}
    for row in results["families"].values():
        assert set(row["cost"]) == {"reorder_point", "forecaster", "agent_no_memory", "agent"}
        for contender, cost in row["cost"].items():
            totals[contender] = totals.get(contender, 0.0) + cost["total"]
    # A gate world holds a short stretch of four products per family: too little to judge
    # one family by (the per-family claims are measured on the held-out worlds, figures
    # in benchmarks/README.md), enough to see a policy lose its edge over all of them.
    assert totals["agent"] <= 0.8 * totals["reorder_point"], totals
    assert totals["agent"] <= totals["forecaster"], totals
    assert totals["agent"] <= totals["agent_no_memory"], totals


def test_replays_in_worker_processes_score_as_in_one(tmp_path: Path) -> None:
    def run(jobs: int) -> dict[str, Any]:
        out = tmp_path / f"jobs-{jobs}"
        # The two smallest recordings: what is compared is where a replay runs, not its size.
        paths = (FIXTURES / "storm.jsonl", FIXTURES / "injection.jsonl")
        options = EvalOptions(paths=paths, out=out, contenders=("reorder_point", "agent"))
        assert asyncio.run(evaluate(replace(options, jobs=jobs))) == 0
        return {
            "results": json.loads((out / "results.json").read_text()),
            "charts": (out / "report.html").read_text().count("<svg"),
        }

    alone, spread = run(1), run(2)
    assert spread["charts"] == alone["charts"] >= 4
    for name, entry in alone["results"]["scenarios"].items():
        for contender, figures in entry["contenders"].items():
            other = spread["results"]["scenarios"][name]["contenders"][contender]
            for key, value in figures.items():
                if not key.startswith("latency"):  # wall-clock, not a decision
                    assert other[key] == value, (name, contender, key)


async def test_a_policy_broken_on_purpose_fails_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = policy.recommend

    def broken(*args: Any) -> RestockProposal:
        proposal = working(*args)
        return proposal.model_copy(update={"quantity": proposal.quantity * 3})

    monkeypatch.setattr(policy, "recommend", broken)
    code = await evaluate(
        EvalOptions(
            paths=(FIXTURES / "steady.jsonl", FIXTURES / "weekly.jsonl"),
            out=tmp_path,
            baseline=BASELINE,
            contenders=("agent",),
        )
    )
    assert code == 1
    results = json.loads((tmp_path / "results.json").read_text())
    baseline = json.loads(BASELINE.read_text())
    for name in ("steady", "weekly"):
        now = results["scenarios"][name]["contenders"]["agent"]["cost"]
        assert now > baseline["scenarios"][name]["contenders"]["agent"]["cost"]


def test_the_cli_reports_a_missing_recording_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentbus", "eval", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "no such recording" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _stat(pid: int) -> list[str] | None:
    """A process's state and what follows it in /proc/PID/stat; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _running_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_an_interrupted_eval_stops_its_workers_and_says_so_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "agentbus", "eval", str(GATE), "--jobs", "2"]
    # Ctrl-C reaches the whole process group, as a terminal sends it.
    eval_ = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while len(_running_children(eval_.pid)) < 3:  # two workers and the resource tracker
            assert eval_.poll() is None, "the eval ended before its workers started"
            assert time.monotonic() < deadline, "no workers started"
            time.sleep(0.2)
        workers = _running_children(eval_.pid)
        time.sleep(3)  # replaying by now
        os.killpg(eval_.pid, signal.SIGINT)
        code = eval_.wait(timeout=15)
        stderr = eval_.stderr.read() if eval_.stderr else ""
    finally:
        if eval_.poll() is None:
            os.killpg(eval_.pid, signal.SIGKILL)
    assert code == 130
    assert stderr.strip() == "error: interrupted"
    deadline = time.monotonic() + 5
    while any((stat := _stat(pid)) is not None and stat[0] != "Z" for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the interrupted eval"
        time.sleep(0.1)
    assert not (tmp_path / "results.json").exists()
