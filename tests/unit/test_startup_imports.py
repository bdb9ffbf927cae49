"""Loading the application stays light: the heavy libraries wait for their users.

Every process of an application (each service, each CLI command) imports every
service's and agent's declaration; LangGraph and the openai client alone took
about 1.5 s of that start. They are imported where a graph is built and where a
model is called, psycopg where a PostgreSQL database is opened, and FastAPI where
the HTTP API or the review console starts serving.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("fastapi", "langgraph", "langchain_core", "openai", "psycopg")


def loaded_after(statement: str) -> list[str]:
    probe = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_cli_and_the_application_load_without_the_heavy_libraries() -> None:
    assert loaded_after("import agentbus.cli, consumers.app") == []


def test_building_an_agents_graph_and_choosing_a_model_import_them() -> None:
    # The same probe sees them once they are used: it is not blind.
    statement = (
        "from agentbus.agent.models import model_from_env\n"
        "from agents.restock.agent import build_graph\n"
        "build_graph(None)\n"
        "import os; os.environ['AGENTBUS_MODEL'] = 'openai'; os.environ['OPENAI_API_KEY'] = 'x'\n"
        "model_from_env()"
    )
    assert loaded_after(statement) == ["langchain_core", "langgraph", "openai"]
