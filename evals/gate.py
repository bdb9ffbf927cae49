"""The regression gate: this run's scores against a baseline `results.json`.

A hard check that got worse (a duplicate, an invalid or out-of-bounds
suggestion, unknown evidence) is a regression at once. Cost and stockouts may
move by the tolerance, plus a few units of slack so that a single unit on a
small scenario does not fail the build.
"""

from __future__ import annotations

from typing import Any

HARD = ("duplicates", "invalid", "out_of_bounds", "evidence_invalid")
SOFT = ("cost", "stockout_units", "unneeded")
SLACK = 3.0


def regressions(baseline: dict[str, Any], current: dict[str, Any], tolerance: float) -> list[str]:
    found: list[str] = []
    for scenario, entry in current.get("scenarios", {}).items():
        before = baseline.get("scenarios", {}).get(scenario)
        if before is None:
            continue  # new scenario: nothing to regress against
        for contender, now in entry["contenders"].items():
            then = before.get("contenders", {}).get(contender)
            if then is None:
                continue
            where = f"{scenario}/{contender}"
            for key in HARD:
                if now.get(key, 0) > then.get(key, 0):
                    found.append(f"{where}: {key} {then.get(key, 0)} -> {now.get(key, 0)}")
            if then.get("passed") and not now.get("passed"):
                found.append(f"{where}: passed before, fails now")
            for key in SOFT:
                old, new = float(then.get(key, 0)), float(now.get(key, 0))
                if new > old * (1 + tolerance) + SLACK:
                    found.append(f"{where}: {key} {old:g} -> {new:g} (tolerance {tolerance:.0%})")
    found += _substitute_regressions(
        baseline.get("substitutes"), current.get("substitutes"), tolerance
    )
    return found


def _substitute_regressions(
    before: dict[str, Any] | None, now: dict[str, Any] | None, tolerance: float
) -> list[str]:
    if not before or not now:
        return []
    found = [
        f"substitutes: {key} {before.get(key, 0)} -> {now.get(key, 0)}"
        for key in ("false_suggestions", "invalid")
        if now.get(key, 0) > before.get(key, 0)
    ]
    old, new = before.get("top3_rate"), now.get("top3_rate")
    if old is not None and new is not None and new < old - tolerance:
        found.append(f"substitutes: top3_rate {old:g} -> {new:g} (tolerance {tolerance:.0%})")
    return found
