"""`agentbus demo` as a user runs it: the whole shop in one process, on embedded defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

Done = subprocess.CompletedProcess[str]


def demo(data: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENTBUS_DATA": str(data)}
    for name in ("AMQP_URL", "DATABASE_URL", "OPENAI_API_KEY", "AGENTBUS_MODEL"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "agentbus", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Done]]:
    """Both ways of running the demo, started together: each is one process on its own
    data, mostly waiting on its own steps, so the two take little longer than one."""
    started = {
        "json": demo(tmp_path_factory.mktemp("json"), "--json", "--trace"),
        "tables": demo(tmp_path_factory.mktemp("tables"), "--trace"),
    }
    try:
        done = {}
        for name, process in started.items():
            out, err = process.communicate(timeout=300)
            done[name] = Done(process.args, process.returncode, out, err)
        yield done
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def walk(spans: list[dict[str, Any]], chain: list[str]) -> list[str]:
    """Follow the first span of each name in `chain` down the tree; the names reached."""
    reached: list[str] = []
    level = spans
    for wanted in chain:
        found = next((s for s in level if s["name"].startswith(wanted)), None)
        if found is None:
            break
        reached.append(wanted)
        level = found["children"]
    return reached


def test_demo_summarises_the_shop_and_shows_one_suggestions_trace(demos: dict[str, Done]) -> None:
    done = demos["json"]
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    orders = summary["orders"]
    assert orders.get("confirmed", 0) > 0
    assert any(outcome.startswith("rejected (") for outcome in orders), orders
    assert summary["low_stock_events"] > 0
    # Every confirmed order ships unless a cancellation stopped it in time (none can with
    # no handling delay), and none ships twice.
    shipped = summary["shipments_prepared"]
    assert shipped == summary["events_on_bus"]["order.confirmed"] - summary["refunds"]
    assert shipped > 0
    assert orders.get("rejected (out_of_stock)", 0) > 0
    assert summary["substitutes_suggested"] >= 1, "the second agent answered an out-of-stock order"
    assert summary["suggestions"], "the agent suggested restocks"
    assert all(row["trace_id"] for row in summary["suggestions"])
    assert all(row["available"] >= 0 for row in summary["inventory"].values())
    # Orders through the HTTP API too, one of them sent twice under one key: every order
    # is one `order.created`, and the API's own orders went through the saga.
    front = summary["api"]
    assert len(front["placed"]) == 3
    assert front["replayed_identically"] == 1
    assert sum(orders.values()) == summary["events_on_bus"]["order.created"]
    assert set(front["statuses"]) == {order["order_id"] for order in front["placed"]}
    assert set(front["statuses"].values()) <= {"confirmed", "rejected"}, front
    assert all(order["total"] > 0 for order in front["placed"]), "priced from the catalog"

    shown = summary["trace"]
    assert shown["trace_id"] == summary["suggestions"][-1]["trace_id"]
    [root] = shown["spans"]
    assert root["attributes"]["messaging.destination.name"] == "agentbus.events:order.created"
    assert root["attributes"]["messaging.system"] == "in_process"
    chain = [
        "publish",
        "process agentbus.events:order.created:inventory",
        "publish",
        "process agentbus.events:inventory.low:restock-agent",
        "invoke_agent restock-agent",
        "publish",
    ]
    # Through the inventory.low branch: pick it by following the spans that lead there.
    low = next(
        publish
        for process in root["children"]
        if process["name"] == "process agentbus.events:order.created:inventory"
        for publish in process["children"]
        if publish["name"] == "publish agentbus.events:inventory.low"
    )
    assert walk([low], chain[2:]) == chain[2:]
    [agent] = [
        c
        for c in low["children"]
        if c["name"] == "process agentbus.events:inventory.low:restock-agent"
    ]
    [run] = agent["children"]
    nodes = [c["name"] for c in run["children"]]
    assert nodes[:3] == ["node gather", "node decide", "node guard"]
    assert nodes[3] == "publish agentbus.events:restock.recommended"


def test_demo_prints_tables_and_the_trace_tree(demos: dict[str, Done]) -> None:
    done = demos["tables"]
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for heading in ("Orders", "Stock", "Restock suggestions", "The trace of one suggestion"):
        assert heading in out
    assert "invoke_agent restock-agent" in out
    assert "execute_tool demand_history" in out
