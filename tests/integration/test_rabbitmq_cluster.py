"""The shop on a three-node RabbitMQ cluster (`deploy/dev/services cluster up`) losing
nodes under load.

Every service runs as an `agentbus run` process with AMQP_URL listing the three nodes
(each service starting at another one). Mid-stream, the node that leads the inventory
queue is SIGKILLed and started again a few seconds later; then another node stops its
application cleanly and starts it again. Clients on a lost node move to the next
address and re-subscribe there; the quorum queues elect new leaders. The final states
must equal the oracle's, as in the single-broker chaos runs. The long run is
`benchmarks/chaos_exactly_once.py --cluster`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbus.retry import RetryPolicy, topology
from agentbus.transport.base import Delivery, Message, QueueSpec
from agentbus.transport.rabbitmq import RabbitTransport
from tests.integration.chaos import Chaos
from tests.integration.rabbit_cluster import (
    NODES,
    ClusterFaults,
    beam_pid,
    bring_up,
    leaders,
    online_members,
    spread,
)
from tests.support.servers import answers
from tests.unit.test_cli_errors import agentbus

pytestmark = pytest.mark.rabbitmq_cluster

EVENTS = 1500  # about 1,000 orders


async def test_quorum_queue_leaders_spread_over_the_nodes(cluster_url: str) -> None:
    # Every queue is declared through one connection, on the first node: the cluster's
    # `queue_leader_locator = balanced` spreads them anyway.
    transport = RabbitTransport(cluster_url, exchange="agentbus.test.cluster-spread")
    names = [f"agentbus.test.spread.{n}" for n in range(6)]
    await transport.start()
    try:
        assert transport.broker_info.port == 5681
        await transport.declare([QueueSpec(name=n, bindings=("x.y",)) for n in names])
        led = await leaders()
        spread = Counter(led[n] for n in names)
        assert set(spread) == set(NODES), spread
    finally:
        for name in names:
            await transport.delete_queue(name)
        await transport.close()


async def test_a_consumer_moves_to_the_next_node_when_its_node_is_killed(
    cluster_url: str,
) -> None:
    """Its queue, retry and dead-letter queues are restored on another node while the
    lost one is still down (a classic delay queue, which lives on one node, would hold
    the restore until that node is back)."""
    exchange = f"agentbus.test.move.{os.getpid()}"
    # Queues of this run's own: a run that failed before deleting its queues leaves them
    # on the cluster, with whatever members were running then.
    specs = topology(f"agentbus.test.move.{os.getpid()}", ("move.*",), RetryPolicy(max_attempts=3))
    consumer = RabbitTransport(spread(cluster_url, 2), exchange=exchange)  # on the third node
    producer = RabbitTransport(cluster_url, exchange=exchange)
    await consumer.start()
    await producer.start()
    got: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        got.append(delivery.message.body)
        await delivery.ack()

    def message(body: bytes) -> Message:
        return Message(body=body, routing_key="move.it", message_id=body.decode())

    try:
        await consumer.declare(specs)
        await consumer.consume(specs[0].name, handle, prefetch=10)
        assert consumer.broker_info.port == 5683
        await producer.publish(message(b"before"))
        await _until(lambda: got == [b"before"], 10)
        # Every member of the queue running first: a node the test before brought back may
        # still be starting its member, and a kill leaving one of three stops the queue.
        await _until_members(specs[0].name, len(NODES), 60)

        os.kill(beam_pid(NODES[2]), signal.SIGKILL)
        killed = time.monotonic()
        await producer.publish(message(b"after"))
        await _until(lambda: got == [b"before", b"after"], 20)
        moved = time.monotonic() - killed
        assert not answers("127.0.0.1", 5683), "the killed node is still down"
        assert consumer.broker_info.port in (5681, 5682)
        print(f"consuming on port {consumer.broker_info.port} {moved:.2f} s after the kill")
    finally:
        await bring_up()
        for spec in specs:
            await producer.delete_queue(spec.name)
        await consumer.close()
        await producer.close()


def test_a_command_takes_the_next_address_when_the_first_does_not_answer(
    cluster_url: str,
) -> None:
    nodes = ",".join(["amqp://guest:guest@127.0.0.1:1/", *cluster_url.split(",")[1:]])
    result = agentbus("dlq", "list", "--json", AMQP_URL=nodes)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "127.0.0.1:1: " in result.stderr
    assert "trying 127.0.0.1:5682" in result.stderr


async def _until_members(queue: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (found := await online_members(queue)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue}: {found} of {count} members running after {seconds} s")
        await asyncio.sleep(0.5)


async def _until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.05)


async def test_no_order_lost_or_applied_twice_when_nodes_go(
    cluster_url: str, tmp_path: Path
) -> None:
    cluster = ClusterFaults()
    chaos = Chaos(
        cluster_url,
        tmp_path / "data",
        seed=22,  # its plan kills the leader's node first, then stops another
        agent=True,
        cluster=cluster,
        leader_kills=1,
        node_stops=1,
    )
    report = await chaos.run(EVENTS, 0)
    print(json.dumps({k: report[k] for k in ("faults", "nodes_hit", "seconds")}, indent=1))
    faults = [f["fault"] for f in report["faults"]]
    assert faults == ["leader_node_killed", "node_stopped"], report
    killed, stopped = (hit["node"] for hit in report["nodes_hit"])
    assert killed != stopped
    assert "inventory" in report["nodes_hit"][0]["led"], report
    # Each fault lands on sagas in flight, and the services consume again within seconds.
    assert all(f["unfinished_orders_at_fault"] > 0 for f in report["faults"]), report
    assert all(f["recovery_seconds"] < 30 for f in report["faults"]), report
    assert report["orders"] >= 1000, report
    assert report["duplicates"] >= 0.08 * report["unique_events"], report
    assert report["lost"] == 0, report
    assert report["wrong_outcomes"] == 0, report
    assert report["unknown_orders"] == 0, report
    assert report["double_applied"] == 0, report
    assert report["negative_on_hand"] == 0, report
    assert report["duplicate_suggestions"] == 0, report
    assert report["suggestion_triggers"] > 0, report
    assert report["unexpected_exits"] == [], report
    assert set(report["dead_letters"]) <= {"inventory.dlq"}, report["unexpected_dead_letters"]
    at_least = report["expected_dead_letters_at_least"]["inventory.dlq"]
    assert report["dead_letters"].get("inventory.dlq", 0) >= at_least, report
    assert all(code == 0 for code in report["exit_codes_on_sigterm"].values()), report
