"""Exactly-once effects under faults: a short chaos run per backend, for CI.

Inventory, orders, payments and the restock agent run as `agentbus run`
subprocesses; while a seeded stream with re-sent duplicates flows, each is
SIGKILLed and restarted, the broker closes every connection, and on
PostgreSQL the broker and the database restart too. On Kafka the broker
restarts, and one of two inventory members is SIGKILLed while both hold records
unsettled, so that its partitions move to the other. The final
states must equal an independent oracle's: no order lost, no outcome wrong, no
stock level applied twice, no trigger with two suggestions. On RabbitMQ a
recorder, SIGKILLed with inventory, records the run, and `agentbus rebuild inventory
--check` on its recording must find the live state exactly, then exit 1 naming
the row changed by hand (on SQLite; test_rebuild_postgres.py checks that on
PostgreSQL). The long run is `benchmarks/chaos_exactly_once.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.chaos import Chaos, KafkaBroker
from tests.integration.chaos_broker import RECORDER

# About 700 orders a run, reaching every branch of the saga on each seed below; the
# long run (10,000 events and more) is the benchmark's.
EVENTS = 1000
KILLS = 4


def check(report: dict[str, Any], faults: dict[str, int]) -> None:
    assert report["kills"] == KILLS, report
    assert set(report["killed"]) == {"inventory", "orders", "payments", "restock-agent"}, report
    assert report["fault_counts"] == {"sigkill": KILLS, **faults}, report
    assert report["duplicate_suggestions"] == 0, report
    assert report["suggestion_triggers"] > 0, "the agent answered low stock throughout"
    assert report["duplicates"] >= 0.08 * report["unique_events"], report
    assert report["unexpected_exits"] == [], report
    # The kills land on sagas in flight.
    assert sum(f["unfinished_orders_at_fault"] for f in report["faults"]) > 0, report
    assert report["lost"] == 0, report
    assert report["wrong_outcomes"] == 0, report
    assert report["unknown_orders"] == 0, report
    assert report["double_applied"] == 0, report
    assert report["negative_on_hand"] == 0, report
    # Only refused adjustments are dead letters (a redelivery may add a copy).
    assert set(report["dead_letters"]) <= {"inventory.dlq"}, report["unexpected_dead_letters"]
    at_least = report["expected_dead_letters_at_least"]["inventory.dlq"]
    assert report["dead_letters"].get("inventory.dlq", 0) >= at_least, report
    assert all(code == 0 for code in report["exit_codes_on_sigterm"].values()), report
    # The stream reaches every branch of the saga.
    outcomes = report["outcomes"]
    for outcome in ("confirmed", "rejected:out_of_stock", "rejected:payment_failed"):
        assert outcomes.get(outcome, 0) > 0, outcomes
    assert outcomes.get("rejected:cancelled", 0) > 0, outcomes


def check_rebuild(report: dict[str, Any], *, tampered: bool = True) -> None:
    """The recording of the run rebuilds inventory's live state exactly, and (when
    `tampered`) a row changed by hand is named."""
    rebuilt = report["rebuild"]
    [inventory_killed] = [f for f in report["faults"] if f["target"] == "inventory"]
    assert inventory_killed["also_killed"] == [RECORDER], report["faults"]
    assert rebuilt["check"]["exit_code"] == 0, rebuilt
    assert rebuilt["check"]["differences"] == [], rebuilt
    # The recorder was killed too, and lost nothing the run published.
    assert rebuilt["published_not_recorded"] == 0, rebuilt
    if not tampered:
        return
    after = rebuilt["check_after_tamper"]
    assert after["exit_code"] == 1, rebuilt
    assert [d.split(":")[0] for d in after["differences"]] == [
        f"stock[{rebuilt['tampered_sku']}].on_hand"
    ], rebuilt


@pytest.mark.rabbitmq
async def test_exactly_once_on_sqlite_under_faults(amqp_url: str, tmp_path: Path) -> None:
    chaos = Chaos(
        amqp_url,
        tmp_path / "data",
        seed=11,
        agent=True,
        connection_drops=1,
        rebuild_check=True,
    )
    report = await chaos.run(EVENTS, KILLS)
    check(report, {"connections_closed": 1})
    check_rebuild(report)


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_exactly_once_on_postgres_under_faults(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    chaos = Chaos(
        amqp_url,
        tmp_path / "data",
        database_url,
        seed=12,
        agent=True,
        connection_drops=1,
        broker_restarts=1,
        database_restarts=1,
        rebuild_check=True,
        tamper_check=False,  # a second rebuild; test_rebuild_postgres.py names a changed row
    )
    report = await chaos.run(EVENTS, KILLS)
    check(report, {"connections_closed": 1, "broker_restart": 1, "database_restart": 1})
    check_rebuild(report, tampered=False)


@pytest.mark.kafka
async def test_exactly_once_on_kafka_under_faults(kafka_bootstrap: str, tmp_path: Path) -> None:
    # Restarts the shared Kafka broker once (deploy/dev/services down/up kafka).
    chaos = Chaos(
        KafkaBroker(kafka_bootstrap),
        tmp_path / "data",
        seed=13,
        agent=True,
        broker_restarts=1,
        rebalances=1,
    )
    report = await chaos.run(EVENTS, KILLS)
    check(report, {"broker_restart": 1, "rebalance_mid_batch": 1})
    [moved] = [f for f in report["faults"] if f["fault"] == "rebalance_mid_batch"]
    assert moved["moved_partitions"] > 0, moved
    # The member died holding records it had not settled; the other settled them.
    assert moved["unsettled_on_moved_partitions"] > 0, moved
