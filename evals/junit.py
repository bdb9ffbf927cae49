"""JUnit XML for CI systems: one test case per scenario, contender and scorer.

The hard checks are the scorers that fail a case; the figures (cost, stockouts,
tokens) ride along as properties so a CI page shows them without the HTML report.
The gate against a baseline is a test case of its own, failing with every
regression it found.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from evals.gate import HARD, regressions

FIGURES = ("cost", "stockout_units", "unneeded", "quantity_error", "model_cost", "runs")


def document(
    results: dict[str, Any], baseline: dict[str, Any] | None = None, tolerance: float = 0.10
) -> ET.Element:
    """The <testsuites> element for one eval run."""
    root = ET.Element("testsuites", name="agentbus eval")
    for scenario, entry in sorted(results.get("scenarios", {}).items()):
        suite = _suite(root, f"eval.{scenario}")
        for contender, figures in sorted(entry["contenders"].items()):
            for scorer in HARD:
                value = figures.get(scorer, 0)
                case = _case(suite, f"{contender}.{scorer}", f"eval.{scenario}")
                _properties(case, figures)
                if value:
                    _fail(case, f"{scorer} = {value:g} (must be 0)", _summary(figures))
    substitutes = results.get("substitutes")
    if substitutes:
        suite = _suite(root, "eval.substitutes")
        for scorer in ("false_suggestions", "invalid"):
            case = _case(suite, scorer, "eval.substitutes")
            value = substitutes.get(scorer, 0)
            if value:
                _fail(case, f"{scorer} = {value:g} (must be 0)", "")
    if baseline is not None:
        suite = _suite(root, "eval.gate")
        case = _case(suite, "regressions", "eval.gate")
        found = regressions(baseline, results, tolerance)
        if found:
            _fail(case, f"{len(found)} regression(s) against the baseline", "\n".join(found))
    _count(root)
    return root


def write(
    results: dict[str, Any],
    path: Path,
    baseline: dict[str, Any] | None = None,
    tolerance: float = 0.10,
) -> None:
    root = document(results, baseline, tolerance)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=name)


def _case(suite: ET.Element, name: str, classname: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", name=name, classname=classname, time="0")


def _properties(case: ET.Element, figures: dict[str, Any]) -> None:
    props = ET.SubElement(case, "properties")
    for key in FIGURES:
        if key in figures:
            ET.SubElement(props, "property", name=key, value=f"{figures[key]:g}")


def _fail(case: ET.Element, message: str, details: str) -> None:
    failure = ET.SubElement(case, "failure", message=message, type="EvalFailure")
    failure.text = details or message


def _summary(figures: dict[str, Any]) -> str:
    return ", ".join(f"{key}={figures[key]:g}" for key in (*HARD, *FIGURES) if key in figures)


def _count(root: ET.Element) -> None:
    total = failed = 0
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        failures = sum(1 for case in cases if case.find("failure") is not None)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        total += len(cases)
        failed += failures
    root.set("tests", str(total))
    root.set("failures", str(failed))
    root.set("errors", "0")


def write_results(
    results_json: Path, path: Path, baseline_json: Path | None, tolerance: float
) -> None:
    """JUnit XML from a run's results.json and, when given, the baseline it was gated on."""
    results = json.loads(results_json.read_text())
    baseline = (
        json.loads(baseline_json.read_text())
        if baseline_json is not None and baseline_json.exists()
        else None
    )
    write(results, path, baseline, tolerance)
