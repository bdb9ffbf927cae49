"""Exactly-once effects under faults, at length: the full chaos run.

Inventory, orders, payments and the restock agent run as `agentbus run`
subprocesses (each in its own process group) on RabbitMQ or Kafka and SQLite or
PostgreSQL. A seeded stream of
catalog, opening stock and then at least 10,000 mixed events (orders of 1-3
lines over 20 SKUs, some over the payment limit, some for more than is left;
cancellations, before, right after and long after their orders; stock received;
adjustments), with 10% of them re-sent later under the same id, is published
while services are SIGKILLed at random moments and restarted, the broker closes
every connection, the broker application restarts and (on PostgreSQL) the
database restarts. On Kafka the broker restarts (deploy/dev/services down/up kafka),
and a second inventory member is SIGKILLed while both members hold records
unsettled, so that its partitions move to the other; topics and groups carry a
prefix of the run's own. When queues (consumer lags) are
empty and states stop changing, `agentbus state inventory/orders --json` are
compared with an independent oracle (tests/integration/chaos.py). On RabbitMQ a
recorder (`agentbus record --queue`) runs as a process of its own, SIGKILLed with
inventory each time inventory is; at the end `agentbus rebuild inventory --check` on its recording
must find the live state exactly (exit 0), and exit 1 naming the row once one stock
row is changed by hand (`--no-rebuild-check` leaves this out).

Prints JSON: events, duplicates, every fault with its recovery time, lost
orders, wrong outcomes, double-applied stock, duplicate suggestions, seconds,
orders per second.

    uv run python benchmarks/chaos_exactly_once.py --backend sqlite
    uv run python benchmarks/chaos_exactly_once.py --transport kafka --backend sqlite
    uv run python benchmarks/chaos_exactly_once.py --backend postgres --events 10000 --kills 10 \
        --connection-drops 2 --broker-restarts 2 --database-restarts 2

With `--cluster` it runs on the three-node cluster of `deploy/dev/services cluster up`
(AMQP_URL listing the nodes, each service starting at another one): the node leading the
inventory queue is SIGKILLed and restarted, another node is stopped and started again,
as many times as `--leader-kills` and `--node-stops` say, besides the service kills.

    uv run python benchmarks/chaos_exactly_once.py --cluster --events 7500 --kills 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the driver lives in tests/

from tests.integration.chaos import Chaos, KafkaBroker
from tests.integration.rabbit_cluster import CLUSTER_URL, ClusterFaults

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--transport", choices=("rabbitmq", "kafka"), default="rabbitmq")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--connection-drops", type=int, default=2, help="rabbitmq only")
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--database-restarts", type=int, default=2, help="postgres only")
    parser.add_argument(
        "--rebalances", type=int, default=2, help="kafka only: mid-batch kills of a member"
    )
    parser.add_argument("--no-agent", action="store_true", help="leave the restock agent out")
    parser.add_argument(
        "--no-rebuild-check",
        action="store_true",
        help="rabbitmq: no recorder, no `rebuild inventory --check` at the end",
    )
    parser.add_argument("--duplicates", type=float, default=0.10, help="share re-sent")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    parser.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to create a scratch database on (--backend postgres)",
    )
    parser.add_argument("--examples", action="store_true", help="keep mismatch examples")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on the cluster of `deploy/dev/services cluster up` (--amqp-url: its nodes)",
    )
    parser.add_argument("--leader-kills", type=int, default=2, help="--cluster only")
    parser.add_argument("--node-stops", type=int, default=2, help="--cluster only")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.cluster:
        # The single broker's faults would hit the shared broker, not the cluster.
        args.connection_drops = args.broker_restarts = 0
        if args.amqp_url == DEFAULT_URL:
            args.amqp_url = CLUSTER_URL
    with tempfile.TemporaryDirectory(prefix="agentbus-chaos-") as scratch:
        kafka = args.transport == "kafka"
        chaos = Chaos(
            KafkaBroker(args.kafka_bootstrap) if kafka else args.amqp_url,
            Path(scratch) / "data",
            args.database_url if args.backend == "postgres" else None,
            seed=args.seed,
            agent=not args.no_agent,
            connection_drops=0 if kafka else args.connection_drops,
            broker_restarts=args.broker_restarts,
            database_restarts=args.database_restarts,
            cluster=ClusterFaults() if args.cluster else None,
            leader_kills=args.leader_kills,
            node_stops=args.node_stops,
            rebalances=args.rebalances if kafka else 0,
            rebuild_check=not kafka and not args.no_rebuild_check,
        )
        report = await chaos.run(
            args.events,
            args.kills,
            duplicate_rate=args.duplicates,
            settle_timeout=1800,
        )
    if not args.examples:
        report.pop("examples", None)
    report["ok"] = (
        report["lost"] == 0
        and report["wrong_outcomes"] == 0
        and report["double_applied"] == 0
        and report["unknown_orders"] == 0
        and report["duplicate_suggestions"] == 0
        and not report["unexpected_exits"]
        and _rebuild_ok(report["rebuild"])
    )
    return report


def _rebuild_ok(rebuilt: dict[str, Any]) -> bool:
    """No check asked for, or: the recording lacks nothing, rebuilds the live state
    exactly, and a row changed by hand is found."""
    if not rebuilt:
        return True
    return (
        rebuilt["published_not_recorded"] == 0
        and rebuilt["check"]["exit_code"] == 0
        and rebuilt["check_after_tamper"]["exit_code"] == 1
        and len(rebuilt["check_after_tamper"]["differences"] or []) == 1
    )


if __name__ == "__main__":
    result = asyncio.run(main(parse()))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)
