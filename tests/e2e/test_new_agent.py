"""`agentbus new-agent` in a copy of the project: the generated agent's tests pass as
generated, its code is lint-clean, and a second run refuses to overwrite it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.unit.test_public_api import violations

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("agentbus", "events", "consumers", "agents", "tools", "evals", "prompts")


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in COPIED:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the installed project.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_scaffolded_agent_passes_its_own_tests(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    made = run(root, "-m", "agentbus", "new-agent", "slow-mover", "--trigger", "inventory.low")
    assert made.returncode == 0, made.stderr
    written = {Path(line).as_posix() for line in made.stdout.split()}
    for expected in (
        "agents/slow_mover/agent.py",
        "tools/slow_mover.py",
        "prompts/slow-mover/v1.txt",
        "tests/agents/test_slow_mover.py",
        "evals/cases/slow_mover.json",
    ):
        assert expected in written
        assert (root / expected).exists()

    tested = run(
        root, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/agents/test_slow_mover.py"
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    for path in [*(root / "agents" / "slow_mover").glob("*.py"), root / "tools" / "slow_mover.py"]:
        assert violations(path.read_text()) == [], f"{path} reaches past the public API"

    check_guide(root)

    linted = run(root, "-m", "ruff", "check", "--quiet", "agents/slow_mover", "tools/slow_mover.py")
    assert linted.returncode == 0, linted.stdout

    again = run(root, "-m", "agentbus", "new-agent", "slow-mover", "--trigger", "inventory.low")
    assert again.returncode == 1
    assert "exist(s) already" in again.stderr
    assert "Traceback" not in again.stderr


def guide_listings() -> list[tuple[str, str]]:
    """(file, code) of every listing in docs/agents.md that names a generated file."""
    text = (ROOT / "docs" / "agents.md").read_text()
    return re.findall(r"```python file=(\S+)\n(.*?)```", text, re.DOTALL)


def check_guide(root: Path) -> None:
    listings = guide_listings()
    assert len(listings) >= 5
    for name, code in listings:
        generated = (root / name).read_text()
        assert code in generated, f"docs/agents.md shows {name} differently from what is generated"


def test_bad_names_and_triggers_are_one_line_errors(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    for args, message in (
        (["Bad_Name"], "lowercase words joined by hyphens"),
        (["ok-name", "--trigger", "no.such.type"], "unknown trigger"),
    ):
        done = run(root, "-m", "agentbus", "new-agent", *args)
        assert done.returncode == 1
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    assert not (root / "agents" / "ok_name").exists()
