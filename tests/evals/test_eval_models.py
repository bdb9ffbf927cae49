"""`agentbus eval` with a model: OpenAI over HTTP (a local server), recorded to a cassette,
replayed strictly offline, and k runs per case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentbus.app import EvalOptions
from evals.run import FIXTURES, evaluate
from tests.support.openai_server import FakeOpenAI


def planner(body: dict[str, Any]) -> dict[str, Any]:
    """A stand-in LLM: orders twice the reorder point it is shown, quoting no evidence."""
    data = body["messages"][-1]["content"]
    point = int(data.split('"reorder_point":')[1].split(",")[0].strip().strip("}"))
    return {
        "quantity": 2 * point,
        "urgency": "medium",
        "rationale": "twice the reorder point",
        "confidence": 0.6,
        "evidence": [],
    }


async def test_an_openai_model_is_evaluated_k_times_recorded_then_replayed_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cassette = tmp_path / "answers.jsonl"
    storm = FIXTURES / "storm.jsonl"
    async with FakeOpenAI(responder=planner) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("AGENTBUS_MODEL_PRICES", json.dumps({"gpt-4o-mini": [150, 600]}))
        code = await evaluate(
            EvalOptions(
                paths=(storm,),
                model="openai",
                record=cassette,
                repeat=2,
                out=tmp_path / "live",
                contenders=("agent",),
            )
        )
        live_calls = len(server.calls)
    assert code == 0
    live = json.loads((tmp_path / "live" / "results.json").read_text())
    figures = live["scenarios"]["storm"]["contenders"]["agent"]
    assert figures["runs"] == 2
    assert figures["passed"]
    assert not figures["flaky"]
    assert live_calls == 2 * figures["suggestions"] > 0  # one call per run, k runs
    assert figures["input_tokens"] > 0
    assert figures["model_cost"] > 0
    assert cassette.exists()

    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    code = await evaluate(
        EvalOptions(
            paths=(storm,),
            model=f"cassette:{cassette}",
            out=tmp_path / "replayed",
            contenders=("agent",),
        )
    )
    assert code == 0
    replayed = json.loads((tmp_path / "replayed" / "results.json").read_text())
    again = replayed["scenarios"]["storm"]["contenders"]["agent"]
    assert again["runs"] == 1
    for key in ("suggestions", "cost", "stockout_units", "overstock_units", "input_tokens"):
        assert again[key] == figures[key], key
