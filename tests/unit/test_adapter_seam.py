"""What differs between SQLite and PostgreSQL is said in one place per database.

The two adapters (`agentbus/store/sqlite.py`, `agentbus/store/postgres.py`) hold
every statement the databases spell differently and every use of their drivers;
services, agents and the rest of the store ask a `Transaction` or an adapter for
what they need (a locked read, a lease, a migration lock), never which database
runs. The scan walks each module's syntax tree, so a comment or a docstring that
names a database does not count, and a branch spelled any way does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentbus", "events", "tools", "agents", "consumers", "evals")
ADAPTERS = {"agentbus/store/sqlite.py", "agentbus/store/postgres.py"}
# Where the database is chosen from the settings, each picks the implementation of a
# port once, as `open_database` picks an adapter: LangGraph's own checkpointers (the
# SQLite one in a module of its own, imported only where it is chosen).
CHOOSERS = {"agentbus/agent/checkpoints.py", "agentbus/agent/sqlite_checkpoints.py"}
DRIVERS = ("sqlite3", "psycopg", "psycopg_pool", "aiosqlite", "asyncpg")
NAMES = {"sqlite", "postgresql", "postgres"}


def findings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DRIVERS:
                    yield node.lineno, f"imports the driver {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in DRIVERS:
                yield node.lineno, f"imports from the driver {node.module}"
        elif isinstance(node, ast.Attribute) and node.attr in {
            "driver_connection",
            "with_for_update",
        }:
            yield node.lineno, f"reads .{node.attr}"
        elif isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for value in values:
                    if isinstance(value, ast.Constant) and value.value in NAMES:
                        yield node.lineno, f"compares with {value.value!r}"


def modules() -> Iterator[tuple[str, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in ADAPTERS or relative in CHOOSERS:
                continue
            yield relative, ast.parse(path.read_text(), relative)


def test_no_module_but_the_adapters_branches_on_the_database() -> None:
    found = [
        f"{where}:{line}: {what}" for where, tree in modules() for line, what in findings(tree)
    ]
    assert not found, "outside the two adapters:\n" + "\n".join(found)


def test_the_scan_sees_a_branch_however_it_is_spelled() -> None:
    planted = """
import psycopg
from sqlite3 import connect
if tx.dialect == "postgresql":
    query = query.with_for_update()
if "sqlite" != engine.dialect.name:
    driver = connection.connection.driver_connection
if name in ("postgres", "other"):
    pass
"""
    whats = [what for _, what in findings(ast.parse(planted))]
    assert "imports the driver psycopg" in whats
    assert "imports from the driver sqlite3" in whats
    assert "compares with 'postgresql'" in whats
    assert "compares with 'sqlite'" in whats
    assert "compares with 'postgres'" in whats
    assert "reads .with_for_update" in whats
    assert "reads .driver_connection" in whats
    # Naming a database in a docstring or a type variant is not a branch.
    assert not list(findings(ast.parse('"""On sqlite."""\nx = t.with_variant(i, "sqlite")\n')))
