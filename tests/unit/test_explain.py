"""`explain`: an applied event, a dead-lettered one, and one that led to a suggestion.

Real services (inventory and the restock agent) on the in-process broker with
SQLite; explain reads their databases and the dead-letter queues afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentbus.agent.runtime import agent_service
from agentbus.deadletters import list_dead_letters
from agentbus.envelope import EventCodec, new_event
from agentbus.explain import Node, explain
from agentbus.store import open_database
from agents.restock import declaration
from consumers import inventory
from events import CATALOG, InventoryAdjusted, StockReceived
from tests.agents.harness import START, Shop, order, product
from tests.support import cloudevents_sdk

SERVICES = ("inventory", "restock-agent")


def find(node: Node, event_type: str) -> Node:
    for child in node.caused:
        if child.type == event_type:
            return child
    raise AssertionError(f"{node.event_id} caused no {event_type}: {[c.type for c in node.caused]}")


async def run_shop(data: Path) -> dict[str, Any]:
    stock = new_event(StockReceived(sku="SKU-A", quantity=14), source="/tests", time=START)
    too_much = new_event(
        InventoryAdjusted(sku="SKU-A", delta=-500, reason="count"), source="/tests", time=START
    )
    big_order = order("o-big", "SKU-A", 6, 1)  # 14 -> 8, under the reorder point of 10
    async with Shop(data, [inventory.build(), agent_service(declaration())]) as shop:
        await shop.publish([product("SKU-A"), stock])
        # From another client, in binary mode, under a message id that client made up.
        await shop.send([cloudevents_sdk.binary(too_much, message_id="client-made-id")])
        await shop.publish([big_order])
        letters = await list_dead_letters(shop.transport, list(SERVICES))
    return {"stock": stock, "too_much": too_much, "order": big_order, "letters": letters}


async def test_explain_follows_applied_dead_lettered_and_suggested(tmp_path: Path) -> None:
    seen = await run_shop(tmp_path)
    codec = EventCodec(CATALOG)
    databases = {name: open_database(name, codec, url=None, data_dir=tmp_path) for name in SERVICES}
    try:
        applied = await explain(seen["stock"].id, databases, seen["letters"])
        refused = await explain(seen["too_much"].id, databases, seen["letters"])
        flow = await explain(seen["order"].id, databases, seen["letters"])
        unknown = await explain("never-published", databases, seen["letters"])
    finally:
        for database in databases.values():
            await database.close()

    assert applied is not None
    assert {a["consumer"] for a in applied.root.applied_by} == {"inventory", "restock-agent"}
    assert all(a["at"] for a in applied.root.applied_by)
    assert applied.root.dead_letters == []

    assert refused is not None
    assert refused.root.applied_by == []
    [letter] = refused.root.dead_letters
    # Named by the event, not by the message id the client made up.
    assert (letter["event_id"], letter["type"]) == (seen["too_much"].id, "inventory.adjusted")
    assert refused.root.type == "inventory.adjusted"
    assert letter["queue"] == "inventory"
    assert letter["error_code"] == "negative_stock"
    assert "below zero" in letter["detail"]

    assert flow is not None
    root = flow.root
    assert {a["consumer"] for a in root.applied_by} == {"inventory", "restock-agent"}
    reserved = find(root, "inventory.reserved")
    assert reserved.produced_by == "inventory"
    low = find(root, "inventory.low")
    [run] = low.agent_runs
    assert run["agent"] == "restock-agent"
    assert run["status"] == "completed"
    suggestion = find(low, "restock.recommended")
    assert suggestion.produced_by == "restock-agent"
    assert suggestion.suggestion is not None
    assert suggestion.suggestion["suggestion_id"] == run["suggestion_id"]
    assert suggestion.suggestion["status"] == "pending"
    assert suggestion.published_at is not None

    assert unknown is None


async def test_the_command_prints_json_and_refuses_an_unknown_id(tmp_path: Path) -> None:
    seen = await run_shop(tmp_path)
    env = {**os.environ, "AGENTBUS_DATA": str(tmp_path)}
    env.pop("AMQP_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentbus", "explain", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = cli(seen["order"].id, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    low = next(c for c in shown["caused"] if c["type"] == "inventory.low")
    assert low["caused"][0]["type"] == "restock.recommended"
    assert "dead-letter queues not searched" in shown["note"]

    tree = cli(seen["order"].id)
    assert tree.returncode == 0, tree.stderr
    assert "restock.recommended" in tree.stdout
    assert "applied by restock-agent" in tree.stdout

    missing = cli("no-such-event")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: no service here has seen event")
    assert "Traceback" not in missing.stderr
