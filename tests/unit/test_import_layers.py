"""Imports go one way, and nothing imports its way back to itself.

The packages stand in layers: the platform (`agentbus`) at the bottom, then the event
catalog, the agents' tools, then the agents and the services side by side (neither
knows the other: they meet on the bus and in the catalog), then the application that
gathers them (`consumers.app`), and at the top the evals and the demo, which run all of
the shop. A package imports only from the layers below its own, so the platform runs
any application, tools serve any agent, a service runs without any agent, and the shop
runs without its evals. On top of that no package, and no module, reaches itself
through its imports.

Every import counts: at module level, inside a function (a lazy import is still a
dependency), under `TYPE_CHECKING` (a cycle of types is a cycle of design), and
`importlib.import_module` of a literal name.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PACKAGES = ("agentbus", "events", "tools", "agents", "consumers", "evals")
# Lowest first: each may import those of the layers before its own, never a peer in its
# own layer nor anything after it. `consumers.app` is the shop's composition: the one
# module of the services' package that names the agents.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("agentbus",),
    ("events",),
    ("tools",),
    ("agents", "consumers"),
    ("consumers.app",),
    ("evals",),
)
APPLICATION = "consumers.app"


def unit_of(module: str) -> str:
    """What a module belongs to in LAYERS: the application, or its top-level package."""
    if module == APPLICATION or module.startswith(APPLICATION + "."):
        return APPLICATION
    return module.partition(".")[0]


def layer_of(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """The package it belongs to: itself for an `__init__`, else its parent."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    where: str  # path:line, for the message


def modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def imports(root: Path, known: Mapping[str, Module]) -> list[Import]:
    """Every import of one known module by another, wherever it is written."""
    found: list[Import] = []
    for module in known.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        for node in ast.walk(tree):
            for name in _imported_names(node, module):
                target = _known_prefix(name, known)
                if target is not None and target != module.name:
                    where = f"{module.path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                    found.append(Import(module.name, target, where))
    return list(dict.fromkeys(found))  # `from a import b, c` once, not once per name


def _imported_names(node: ast.AST, module: Module) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        # `from package import name` imports the module `package.name` when there is one.
        return [f"{base}.{alias.name}" for alias in node.names]
    if (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value.partition(":")[0]]
    return []


def _known_prefix(name: str, known: Mapping[str, Module]) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def against_the_layers(found: Iterable[Import]) -> list[str]:
    wrong: list[str] = []
    for edge in found:
        source, target = unit_of(edge.source), unit_of(edge.target)
        if source == target:
            continue
        low, high = layer_of(target), layer_of(source)
        if low is None or high is None:
            wrong.append(f"{edge.where}: {source} or {target} has no place in LAYERS")
        elif low >= high:
            below = ", ".join(unit for layer in LAYERS[:high] for unit in layer)
            allowed = f"may import only {below}" if below else "may import none of the others"
            wrong.append(f"{edge.where}: {edge.source} imports {edge.target} ({source} {allowed})")
    return wrong


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def module_graph(found: Iterable[Import]) -> dict[str, set[str]]:
    """Module to module. A module's import of a package that contains it is left out:
    a package's `__init__` gathers its own modules' names, and they and it are one unit."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        if not edge.source.startswith(edge.target + "."):
            graph.setdefault(edge.source, set()).add(edge.target)
    return graph


def package_graph(found: Iterable[Import], known: Mapping[str, Module]) -> dict[str, set[str]]:
    """Package to package, at every depth (`agents.restock`, `tools`, ...). A package's
    use of a package that contains it is left out: it is built on its parent's modules,
    and the module graph watches those."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        source, target = known[edge.source].package, known[edge.target].package
        if source != target and not source.startswith(target + "."):
            graph.setdefault(source, set()).add(target)
    return graph


def top_graph(found: Iterable[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in found:
        source, target = edge.source.partition(".")[0], edge.target.partition(".")[0]
        if source != target:
            graph.setdefault(source, set()).add(target)
    return graph


def problems(root: Path, packages: Iterable[str]) -> Iterator[str]:
    known = modules(root, packages)
    found = imports(root, known)
    yield from against_the_layers(found)
    for component in cycles(top_graph(found)):
        yield "packages in a cycle: " + ", ".join(component)
    for component in cycles(package_graph(found, known)):
        yield "sub-packages in a cycle: " + ", ".join(component)
    for component in cycles(module_graph(found)):
        yield "modules in a cycle: " + ", ".join(component)


def test_every_shipped_package_has_a_layer() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert sorted(shipped) == sorted(PACKAGES)


def test_imports_go_down_the_layers_and_never_round() -> None:
    found = list(problems(ROOT, PACKAGES))
    assert not found, "\n".join(found)


def plant(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree in the project's layout with nothing wrong in it."""
    return plant(
        tmp_path,
        {
            "agentbus/__init__.py": "",
            "agentbus/envelope.py": "",
            "agentbus/host.py": "from agentbus import envelope\n",
            "events/__init__.py": "from agentbus.envelope import *\n",
            "tools/__init__.py": "",
            "tools/stock.py": "import events\n",
            "agents/__init__.py": "",
            "agents/restock/__init__.py": "from agents.restock.agent import NAME\n",
            "agents/restock/agent.py": "from agents.restock import policy\nimport tools.stock\n",
            "agents/restock/policy.py": "from agents.restock import NAME\n",
            "consumers/__init__.py": "",
            "consumers/app.py": "from agents import restock\n",
            "evals/__init__.py": "",
            "evals/run.py": "from consumers.app import app\n",
        },
    )


def test_the_checker_passes_a_clean_tree(tree: Path) -> None:
    # agents.restock.policy imports its own package's __init__, which imports it back
    # (through agent): one unit, not a cycle.
    assert list(problems(tree, PACKAGES)) == []


def test_the_checker_finds_an_import_up_the_layers_even_inside_a_function(tree: Path) -> None:
    plant(tree, {"tools/stock.py": "def read():\n    from agents.restock import policy\n"})
    assert list(problems(tree, PACKAGES)) == [
        "tools/stock.py:2: tools.stock imports agents.restock.policy "
        "(tools may import only agentbus, events)",
        "packages in a cycle: agents, tools",
        "sub-packages in a cycle: agents.restock, tools",
    ]


def test_the_checker_keeps_the_services_and_the_agents_apart(tree: Path) -> None:
    plant(tree, {"consumers/review.py": "from agents.restock import agent\n"})
    assert list(problems(tree, PACKAGES)) == [
        "consumers/review.py:1: consumers.review imports agents.restock.agent "
        "(consumers may import only agentbus, events, tools)"
    ]


def test_the_checker_keeps_the_application_above_its_own_services(tree: Path) -> None:
    plant(tree, {"consumers/review.py": "from consumers.app import app\n"})
    assert list(problems(tree, PACKAGES)) == [
        "consumers/review.py:1: consumers.review imports consumers.app "
        "(consumers may import only agentbus, events, tools)"
    ]


def test_the_checker_finds_the_platform_importing_the_shop_by_name(tree: Path) -> None:
    plant(
        tree, {"agentbus/host.py": "import importlib\nimportlib.import_module('consumers.app')\n"}
    )
    found = list(problems(tree, PACKAGES))
    assert found[0] == (
        "agentbus/host.py:2: agentbus.host imports consumers.app "
        "(agentbus may import none of the others)"
    )
    # The platform now reaches the shop, which is built on it: every layer in one cycle.
    assert "packages in a cycle: agentbus, agents, consumers, events, tools" in found


def test_the_checker_finds_a_cycle_of_modules_through_type_checking(tree: Path) -> None:
    plant(
        tree,
        {
            "agentbus/envelope.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import host\n"
            )
        },
    )
    assert list(problems(tree, PACKAGES)) == [
        "modules in a cycle: agentbus.envelope, agentbus.host"
    ]


def test_the_checker_finds_a_cycle_between_sub_packages_of_one_package(tree: Path) -> None:
    plant(
        tree,
        {
            "agents/substitute/__init__.py": "",
            "agents/substitute/agent.py": "from agents.restock import policy\n",
            "agents/restock/policy.py": "from agents.substitute import agent\n",
        },
    )
    assert list(problems(tree, PACKAGES)) == [
        "sub-packages in a cycle: agents.restock, agents.substitute",
        "modules in a cycle: agents.restock.policy, agents.substitute.agent",
    ]
