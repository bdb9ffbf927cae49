"""The committed cassette of SmolLM2-135M-Instruct's real answers, replayed offline:
the report sets the model against the agent's own policy and the reorder-point
formula, with the tokens and seconds the answers took when they were recorded.
(Record them again with `uv run python -m evals.record_cassettes`.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from agentbus.app import EvalOptions
from evals.local_model import MODEL
from evals.record_cassettes import CASSETTE
from evals.run import FIXTURES, evaluate


async def test_recorded_answers_replay_offline_beside_policy_and_formula(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)  # nothing to reach: replay is strict
    console = Console(file=(tmp_path / "out.txt").open("w"), width=200)
    code = await evaluate(
        EvalOptions(
            paths=[FIXTURES],
            model=f"cassette:{CASSETTE}",
            out=tmp_path,
            contenders=["agent", "policy", "reorder_point"],
            jobs=0,
        ),
        console,
    )
    assert code == 0
    html = (tmp_path / "report.html").read_text()
    assert f"Model {MODEL} against the policy and the formula" in html
    printed = (tmp_path / "out.txt").read_text()
    assert "best: " in printed
    results = json.loads((tmp_path / "results.json").read_text())
    found = results["comparison"]
    assert found["model_name"] == MODEL
    recordings = {path.stem for path in FIXTURES.glob("*.jsonl")}
    assert set(found["scenarios"]) == recordings
    # Real answers, replayed: the model decided, with the tokens and time it took then.
    # Every request of every recording finds its answer: where the policy decided, the
    # model's answer was malformed twice when it was recorded, never a cassette miss.
    for name, entry in results["scenarios"].items():
        agent = entry["contenders"]["agent"]
        assert set(agent["fallbacks"]) <= {"MalformedOutput"}, (name, agent["fallbacks"])
        assert agent["decided_by_model"] >= 1, name
    assert found["decided_by_model"] >= 60
    assert found["input_tokens"] > 1000
    assert found["model_p50_s"] > 0
    for entry in results["scenarios"].values():
        assert entry["contenders"]["agent"]["passed"], "schema, bounds and evidence hold"
    # The small model loses to the policy, and the report says so rather than hide it.
    assert found["total_cost"]["model"] > found["total_cost"]["policy"]
    assert found["best"] != "model"
