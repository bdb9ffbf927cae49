"""`agentbus eval --junit`: the XML a CI system reads, one case per scenario and scorer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agentbus.app import EvalOptions
from agents.restock import policy
from agents.restock.proposal import RestockProposal
from evals.gate import HARD
from evals.junit import document
from evals.run import BASELINE, FIXTURES, run_eval

CASES = (FIXTURES / "steady.jsonl", FIXTURES / "weekly.jsonl")


def options(out: Path, junit: Path) -> EvalOptions:
    return EvalOptions(
        paths=CASES,
        model="policy",
        record=None,
        repeat=1,
        out=out,
        baseline=BASELINE,
        tolerance=0.10,
        contenders=("agent",),
        junit=junit,
    )


def cases(path: Path) -> dict[str, ET.Element]:
    """Test cases by classname/name, after checking the JUnit structure and its counts."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    found: dict[str, ET.Element] = {}
    for suite in root.findall("testsuite"):
        own = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(own)
        failing = [case for case in own if case.find("failure") is not None]
        assert int(suite.get("failures", "-1")) == len(failing)
        for case in own:
            found[f"{case.get('classname')}/{case.get('name')}"] = case
    assert int(root.get("tests", "-1")) == len(found)
    return found


async def test_a_passing_run_writes_one_passing_case_per_scenario_and_scorer(
    tmp_path: Path,
) -> None:
    junit = tmp_path / "junit.xml"
    assert await run_eval(options(tmp_path, junit)) == 0
    found = cases(junit)
    expected = {f"eval.{s}/agent.{k}" for s in ("steady", "weekly") for k in HARD}
    assert expected | {"eval.gate/regressions"} == set(found)
    assert all(case.find("failure") is None for case in found.values())
    cost = found["eval.steady/agent.duplicates"].find("properties/property[@name='cost']")
    assert cost is not None
    assert float(cost.get("value", "nan")) >= 0


async def test_a_policy_broken_on_purpose_shows_up_as_failures_with_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = policy.recommend

    def broken(*args: Any) -> RestockProposal:
        proposal = working(*args)
        return proposal.model_copy(update={"quantity": proposal.quantity * 3})

    monkeypatch.setattr(policy, "recommend", broken)
    junit = tmp_path / "junit.xml"
    assert await run_eval(options(tmp_path, junit)) == 1
    gate = cases(junit)["eval.gate/regressions"].find("failure")
    assert gate is not None
    assert "regression" in gate.get("message", "")
    # Every regressed figure is named with its before and after.
    assert "steady/agent: cost" in (gate.text or "")
    assert "->" in (gate.text or "")


def test_a_hard_check_that_fails_is_a_failing_case_with_its_figures() -> None:
    figures = {key: 0 for key in HARD} | {"duplicates": 2, "cost": 12.5, "runs": 1}
    root = document({"scenarios": {"storm": {"contenders": {"agent": figures}}}})
    failing = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failing] == ["agent.duplicates"]
    failure = failing[0].find("failure")
    assert failure is not None
    assert failure.get("message") == "duplicates = 2 (must be 0)"
    assert "cost=12.5" in (failure.text or "")
    assert root.get("failures") == "1"
