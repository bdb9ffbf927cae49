"""Make recordings: a scenario's inputs through the shop with a reviewer and a supplier.

    uv run python -m evals.simulate --out evals/fixtures
    uv run python -m evals.simulate --families --split train --out /tmp/train

writes one `<scenario>.jsonl` per scenario (every event that went over the bus,
exactly as `agentbus record` writes them) and a `<scenario>.json` sidecar with
its name and notes. The same seed gives the same bytes. Family worlds keep only
their inputs (a third of the size; replay makes the services' events again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agentbus.envelope import Event, EventCodec, derived_id, new_event
from agents.registry import restock_agent
from evals.families import SPLITS, worlds
from evals.replay import inputs_of, replay
from evals.scenarios import SCENARIOS, START, Reviewer, Scenario
from events import CATALOG, RestockApproved, RestockRejected, StockReceived

REVIEWER = "/simulator/reviewer"
SUPPLIER = "/simulator/supplier"


class ScenarioActors:
    """The scenario's reviewer and supplier, answering in simulated time."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._lows: dict[str, Any] = {}  # inventory.low id -> its data
        self._arriving: dict[str, list[tuple[datetime, int]]] = {}  # sku -> deliveries due

    def react(self, event: Event[Any]) -> Iterable[Event[Any]]:
        if event.type == "inventory.low":
            self._lows[event.id] = event.data
        elif event.type == "restock.recommended":
            yield self._review(event)
        elif event.type == "purchase_order.created":
            item = self.scenario.item(event.data.sku)
            day = (event.time - START).days
            due = event.time + timedelta(days=item.lead_on(day))
            self._arriving.setdefault(event.data.sku, []).append((due, event.data.quantity))
            yield new_event(
                StockReceived(
                    sku=event.data.sku,
                    quantity=event.data.quantity,
                    purchase_order_id=event.data.purchase_order_id,
                ),
                source=SUPPLIER,
                cause=event,
                id=derived_id("sim-supplier", event.id),
                time=due,
            )

    def _review(self, event: Event[Any]) -> Event[Any]:
        data = event.data
        reviewer = self.scenario.reviewer
        item = self.scenario.item(data.sku)
        at = event.time + timedelta(hours=reviewer.delay_hours)
        ids = derived_id("sim-reviewer", event.id)
        if reviewer.max_quantity is not None and data.quantity > reviewer.max_quantity:
            return new_event(
                RestockRejected(
                    recommendation_id=data.recommendation_id,
                    sku=data.sku,
                    reviewer="sim-reviewer",
                    reason=f"{reviewer.reason} (asked {data.quantity})",
                ),
                source=REVIEWER,
                cause=event,
                id=ids,
                time=at,
            )
        quantity = min(data.quantity, item.max_stock)
        low = self._lows.get(str(data.trigger_event_id))
        if reviewer.min_max and low is not None:
            on_order = sum(q for due, q in self._arriving.get(data.sku, []) if due > event.time)
            quantity = max(1, low.max_stock - low.available - on_order)
        return new_event(
            RestockApproved(
                recommendation_id=data.recommendation_id,
                sku=data.sku,
                quantity=quantity,
                reviewer="sim-reviewer",
                note=None if quantity == data.quantity else _changed(reviewer, quantity),
            ),
            source=REVIEWER,
            cause=event,
            id=ids,
            time=at,
        )


def _changed(reviewer: Reviewer, quantity: int) -> str:
    if reviewer.min_max:
        return f"ordered {quantity}, up to max stock by the buyer's own rule"
    return f"trimmed to the shelf, {quantity}"


async def record_scenario(scenario: Scenario, out: Path, *, inputs_only: bool = False) -> Path:
    """Record `scenario` to `out`; `inputs_only` keeps what came from outside the services
    (catalog, stock, orders, decisions, deliveries), as a world built from the contract
    alone looks: replay makes the rest again."""
    replayed = await replay(scenario.inputs(), restock_agent, actors=ScenarioActors(scenario))
    codec = EventCodec(CATALOG)
    path = out / f"{scenario.name}.jsonl"
    kept = inputs_of(replayed.events) if inputs_only else replayed.events
    with path.open("wb") as handle:
        for event in kept:
            # Trace context belongs to the run that made the recording, not to the shop's
            # story: without it the same seed gives the same bytes, traced or not.
            plain = event.model_copy(update={"traceparent": None, "tracestate": None})
            handle.write(codec.encode(plain) + b"\n")
    sidecar = {
        "scenario": scenario.name,
        "notes": scenario.notes,
        "history_matters": scenario.history_matters,
    }
    if scenario.family is not None:
        sidecar.update(family=scenario.family, seed=scenario.seed)
    (out / f"{scenario.name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("evals/fixtures"))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument(
        "--families", action="store_true", help="worlds of the families instead of the scenarios"
    )
    parser.add_argument("--split", choices=sorted(SPLITS), default="held-out")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="instead of the split's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = (
        worlds(args.split, tuple(args.seeds) if args.seeds else None)
        if args.families
        else list(SCENARIOS)
    )
    for scenario in chosen:
        if args.only and scenario.name not in args.only:
            continue
        path = asyncio.run(record_scenario(scenario, args.out, inputs_only=args.families))
        print(f"{path}: {sum(1 for _ in path.open())} events")


if __name__ == "__main__":
    main()
