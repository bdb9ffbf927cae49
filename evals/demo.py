"""`agentbus demo`: the shop in one process, on embedded defaults, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from agentbus.agent import read_suggestions
from agentbus.app import DemoOptions
from agentbus.bootstrap import System, bootstrap
from agentbus.host import Host
from agentbus.trace_view import TraceRecorder, trace_json, trace_tree
from agentbus.transport.base import Delivery, QueueSpec
from agents import restock
from agents.registry import restock_agent, substitute_agent
from consumers import (
    inventory,
    memory,
    notifications,
    orders,
    payments,
    purchasing,
    shipping,
)
from consumers.notifications.service import ORDER_NEWS
from evals import actors
from evals.demo_api import DemoApi
from evals.simulator import ShopSimulation
from events import CATALOG

OBSERVER = "demo.observer"


async def run_demo(options: DemoOptions) -> int:
    console = Console(stderr=options.as_json)
    data_dir = options.settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)  # the demo's own folder: a fresh shop each run
    settings = replace(
        options.settings,
        data_dir=data_dir,
        database_url=None,
        consumer=replace(options.settings.consumer, event_time="cause"),
        # RabbitMQ only when asked for (`--amqp`), else the in-process broker: never Kafka.
        amqp_url=options.amqp_url,
        kafka_bootstrap_servers=None,
    )
    web = DemoApi()
    services = [
        inventory.build(),
        orders.build(),
        payments.build(),
        notifications.build(),
        # No handling delay: the demo's days pass in moments, and each one settles.
        shipping.build(delay=0.0),
        purchasing.build(),
        memory.build(),
        restock_agent(),
        substitute_agent(),
        actors.reviewer(),
        actors.supplier(),
        web.api.service,
    ]
    system = bootstrap(settings, CATALOG, services, name="demo")
    seen: Counter[str] = Counter()

    async def observe(delivery: Delivery) -> None:
        seen[delivery.message.type or "?"] += 1
        await delivery.ack()

    system.observe(
        QueueSpec(OBSERVER, bindings=("#",), kind="classic", transient=True), observe, prefetch=256
    )
    simulation = ShopSimulation()
    events = list(simulation.events())
    recorder = TraceRecorder() if options.trace else None
    started = time.perf_counter()
    with recorder or contextlib.nullcontext():
        front = await _run(system, events, seen, console, web)
    elapsed = time.perf_counter() - started
    summary = await _summary(system, seen, elapsed, len(events))
    summary["api"] = front
    shown = _one_trace(recorder, summary) if recorder else None
    if options.as_json:
        if shown is not None:
            summary["trace"] = {"trace_id": shown[0], "spans": trace_json(shown[1])}
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    else:
        _print_summary(console, summary, data_dir)
        if shown is not None:
            console.print("The trace of one suggestion, from the order that led to it:")
            console.print(trace_tree(shown[1], shown[0]))
        elif recorder is not None:
            console.print("no suggestion was made, so there is no trace to show")
    return 0


def _one_trace(
    recorder: TraceRecorder, summary: dict[str, Any]
) -> tuple[str, list[ReadableSpan]] | None:
    """The trace of the earliest suggestion: the full flow, order to suggestion."""
    for row in reversed(summary["suggestions"]):
        if row["trace_id"]:
            return row["trace_id"], recorder.spans_of(row["trace_id"])
    return None


async def _run(
    system: System, events: list[Any], seen: Counter[str], console: Console, web: DemoApi
) -> dict[str, Any]:
    host, bus = system.host, system.bus
    async with system:
        with Live(_status(seen, 0, len(events), host), console=console, transient=True) as live:
            published = 0
            for day in _days(events):
                # A day at a time, settled: agents then see the history in order.
                await bus.publish_many(day)
                published += len(day)
                await host.settle(interval=0.02, stable=2, timeout=120)
                live.update(_status(seen, published, len(events), host))
            waiting = host.settle(timeout=120)
            task = asyncio.ensure_future(waiting)
            while not task.done():
                live.update(_status(seen, len(events), len(events), host))
                await asyncio.sleep(0.1)
            await task
            # Then a few orders through the front door, priced by the API's catalog.
            skus = sorted({e.data.sku for e in events if e.type == "product.upserted"})
            front = await web.place_orders(skus)
            await host.settle(timeout=120)
            ids = [str(order["order_id"]) for order in front["placed"]]
            front["statuses"] = await web.statuses(ids)
            return front


def _days(events: list[Any]) -> list[list[Any]]:
    days: dict[Any, list[Any]] = {}
    for event in events:
        days.setdefault(event.time.date(), []).append(event)
    return [days[day] for day in sorted(days)]


def _status(seen: Counter[str], published: int, total: int, host: Host) -> Table:
    table = Table(title=f"agentbus demo: {min(published, total)}/{total} input events published")
    table.add_column("event type")
    table.add_column("seen on the bus", justify="right")
    for event_type, count in sorted(seen.items()):
        table.add_row(event_type, str(count))
    in_flight = sum(consumer.in_flight for consumer in host.consumers)
    table.caption = f"in flight: {in_flight}"
    return table


async def _summary(
    system: System, seen: Counter[str], elapsed: float, inputs: int
) -> dict[str, Any]:
    async def read(service: str, reader: Any) -> Any:
        database = system.database(service)
        try:
            return await database.read(reader)
        finally:
            await database.close()

    stock = await read("inventory", inventory.read_state)
    suggestions = await read(restock.NAME, read_suggestions)
    order_state = await read("orders", orders.read_state)
    outcomes = Counter(
        f"{row['status']}" + (f" ({row['reason']})" if row["reason"] else "")
        for row in order_state.values()
    )
    return {
        "input_events": inputs,
        "events_on_bus": dict(sorted(seen.items())),
        "orders": dict(sorted(outcomes.items())),
        "inventory": stock,
        "low_stock_events": seen.get("inventory.low", 0),
        "suggestions": [
            {
                "sku": row["subject"],
                "quantity": row["data"]["quantity"],
                "urgency": row["data"]["urgency"],
                "model": row["data"]["model"],
                "rationale": row["data"]["rationale"],
                "status": row["status"],
                "trace_id": row["trace_id"],
                "decision": (row["decision"] or {}).get("note")
                or (row["decision"] or {}).get("reason"),
            }
            for row in suggestions
        ],
        "purchase_orders": seen.get("purchase_order.created", 0),
        "substitutes_suggested": seen.get("substitute.suggested", 0),
        "shipments_prepared": seen.get("shipment.prepared", 0),
        "refunds": seen.get("payment.refunded", 0),
        "emails_queued": sum(seen.get(t, 0) for t in ORDER_NEWS),
        "seconds": round(elapsed, 2),
    }


def _print_summary(console: Console, summary: dict[str, Any], data_dir: Any) -> None:
    outcomes = Table("outcome", "orders", title="Orders")
    for outcome, count in summary["orders"].items():
        outcomes.add_row(outcome, str(count))
    stock = Table("sku", "on hand", "reserved", "available", title="Stock")
    for sku, row in summary["inventory"].items():
        stock.add_row(sku, str(row["on_hand"]), str(row["reserved"]), str(row["available"]))
    flow = Table("event type", "count", title="Events on the bus")
    for event_type, count in summary["events_on_bus"].items():
        flow.add_row(event_type, str(count))
    ideas = Table("sku", "qty", "urgency", "status", "rationale", title="Restock suggestions")
    for row in summary["suggestions"]:
        status = row["status"] + (f": {row['decision']}" if row["decision"] else "")
        ideas.add_row(row["sku"], str(row["quantity"]), row["urgency"], status, row["rationale"])
    console.print(Group(outcomes, stock, flow, ideas))
    front = summary["api"]
    console.print(
        f"{len(front['placed'])} orders placed over the HTTP API (one sent twice under one "
        f"Idempotency-Key, answered the same), now: "
        + ", ".join(sorted(set(front["statuses"].values())))
    )
    console.print(
        f"{summary['input_events']} input events, {summary['shipments_prepared']} shipments "
        f"prepared, {summary['low_stock_events']} low-stock "
        f"signals, {summary['substitutes_suggested']} substitute suggestion(s) for orders out "
        f"of stock, in {summary['seconds']}s. State is kept in {data_dir}: try "
        f"AGENTBUS_DATA={data_dir} agentbus state inventory"
    )
