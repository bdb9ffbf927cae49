"""Agents and their tools use the platform's public API only.

The public API is the `__all__` of a few packages; anything else in `agentbus`
(tables, runtimes, adapters) may change without notice, so `agents/` and
`tools/` must not reach for it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = (
    "agentbus.agent",
    "agentbus.envelope",
    "agentbus.environment",
    "agentbus.llm",
    "agentbus.memory",
    "agentbus.service",
    "agentbus.store",
)


def violations(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("agentbus"):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentbus"):
            module = node.module or ""
            if module not in PUBLIC:
                found.append(f"from {module} import ...")
                continue
            exported = set(getattr(importlib.import_module(module), "__all__", ()))
            found += [
                f"from {module} import {alias.name}"
                for alias in node.names
                if alias.name not in exported
            ]
    return found


def test_the_checker_catches_private_imports() -> None:
    assert violations("from agentbus.agent import tables") == ["from agentbus.agent import tables"]
    assert violations("from agentbus.store.migrations import create_tables") != []
    assert violations("import agentbus.consumer") == ["import agentbus.consumer"]
    assert violations("from agentbus.agent import Agent, RunContext") == []


@pytest.mark.parametrize(
    "path",
    sorted(p for folder in ("agents", "tools") for p in (ROOT / folder).rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_agents_import_only_the_public_api(path: Path) -> None:
    assert violations(path.read_text()) == []


def test_every_public_name_exists() -> None:
    for module in PUBLIC:
        loaded = importlib.import_module(module)
        for name in loaded.__all__:
            assert hasattr(loaded, name), f"{module}.{name}"
