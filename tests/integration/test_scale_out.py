"""Scaling out: three `inventory` processes share one partitioned queue (RabbitMQ) or
the partitions of their topics as one consumer group (Kafka).

Each SKU's events form a chain where order is everything: a receipt, then an
adjustment taking exactly that stock away, again and again. An adjustment that
overtook its receipt would find too little stock and be dead-lettered, so a
single dead letter means a subject's order was lost somewhere. One process is
SIGKILLed mid-stream and comes back: its partitions move to the others and back.
On PostgreSQL, where the deployment runs (the roster is advisory locks there);
the SQLite roster's lock files are checked in tests/unit/test_partitions.py and,
with two members over RabbitMQ, in tests/contract/test_transport_contract.py.

On Kafka a topic per event type keeps order per key within a topic only, so there
each chain is adjustments alone: +q then -q, on one topic under the SKU's key.
"""

from __future__ import annotations

import asyncio
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentbus.envelope import Event, new_event
from events import InventoryAdjusted, StockReceived
from tests.integration.chaos import (
    START,
    KafkaBroker,
    ServiceProcess,
    Shop,
    exclusive_queues,
    publish_surely,
    queue_counts,
)
from tests.support.broker import product

PARTITIONS = 6
INSTANCES = 3
SKUS = 24
CYCLES = 25
ASSIGNMENT = re.compile(r"consuming partitions \[([\d, ]*)\] of (\d+)")


def chains(seed: int, *, one_topic: bool = False) -> list[Event[Any]]:
    """Per SKU: receive q (or, on `one_topic`, adjust by +q), take q away, CYCLES times;
    SKUs interleaved at random."""
    rng = random.Random(seed)
    clock = START
    events: list[Event[Any]] = []

    def add(data: Any, event_id: str) -> None:
        nonlocal clock
        clock += timedelta(seconds=1)
        events.append(new_event(data, source="/tests/scale-out", id=event_id, time=clock))

    names = [f"CHAIN-{n:02d}" for n in range(SKUS)]
    # No reorder point: no low-stock events, which nothing here consumes.
    events.extend(product(sku, reorder_point=0) for sku in names)
    steps = {sku: 0 for sku in names}
    while steps:
        sku = rng.choice(sorted(steps))
        n = steps[sku]
        quantity = rng.randint(1, 9)
        if one_topic:
            add(InventoryAdjusted(sku=sku, delta=quantity, reason="found"), f"in-{sku}-{n}")
        else:
            add(StockReceived(sku=sku, quantity=quantity), f"in-{sku}-{n}")
        add(InventoryAdjusted(sku=sku, delta=-quantity, reason="shipped"), f"out-{sku}-{n}")
        steps[sku] = n + 1
        if steps[sku] == CYCLES:
            del steps[sku]
    resent = rng.sample(events, k=len(events) // 10)  # duplicates, sent again at the end
    return events + resent


async def until_consuming(processes: list[ServiceProcess], timeout: float = 60) -> list[set[int]]:
    """Until the live processes' latest assignments cover every partition once."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        latest = [assignment(p) for p in processes if p.alive]
        taken = sorted(x for part in latest for x in part)
        if taken == list(range(PARTITIONS)):
            return latest
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"partitions not covered once: {latest}")
        await asyncio.sleep(0.3)


def assignment(process: ServiceProcess) -> set[int]:
    found = [m for line in process.tail if (m := ASSIGNMENT.search(line))]
    if not found:
        return set()
    return {int(x) for x in found[-1].group(1).split(",") if x.strip()}


async def run(amqp_url: str, data_dir: Path, postgres_url: str | None) -> None:
    events = chains(seed=5)
    shop = Shop(amqp_url, data_dir, postgres_url)
    async with exclusive_queues():
        try:
            await shop.prepare()
            env = {
                **shop.env(),
                "AGENTBUS_PARTITIONS": str(PARTITIONS),
                "AGENTBUS_LOG_LEVEL": "INFO",
            }
            processes = [
                ServiceProcess("inventory", env, f"inventory-{n}") for n in range(INSTANCES)
            ]
            shop.processes.extend(processes)
            for process in processes:
                await process.start()
            spread = await until_consuming(processes)
            assert all(spread), f"a process holds no partition: {spread}"
            third = len(events) // 3
            async with shop.publisher() as bus:
                await publish_surely(bus, events[:third])
                await processes[1].kill()  # its partitions must move to the other two
                await until_consuming(processes)
                await publish_surely(bus, events[third : 2 * third])
                await processes[1].start()  # and some come back
                spread = await until_consuming(processes)
                assert all(spread), f"the restarted process got nothing back: {spread}"
                await publish_surely(bus, events[2 * third :])
            names = [f"inventory.p{p}" for p in range(PARTITIONS)]
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                counts = await queue_counts(amqp_url, names)
                inventory = await shop.state("inventory")
                done = all(ready == 0 for ready, _ in counts.values())
                if done and all(v["on_hand"] == 0 for v in inventory.values()):
                    break
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(1)
            dead = await shop.dead_letters()
            assert dead == {}, f"a subject's events were applied out of order: {dead}"
            assert len(inventory) == SKUS
            wrong = {sku: v for sku, v in inventory.items() if v["on_hand"] != 0}
            assert wrong == {}, f"stock left over, so a chain broke: {wrong}"
            # One active consumer per partition: each has consumers (waiting ones too).
            counts = await queue_counts(amqp_url, names)
            assert all(consumers >= 1 for _, consumers in counts.values()), counts
        finally:
            await shop.dispose()


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_three_inventory_processes_keep_each_skus_order(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    await run(amqp_url, tmp_path / "data", database_url)


async def until_group(
    broker: KafkaBroker, members: int, timeout: float = 90
) -> dict[str, set[tuple[str, int]]]:
    """Until the inventory group is stable with `members` members, each holding some."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        group = (await broker.groups(["inventory"]))["inventory"]
        held = group.members
        if group.state == "Stable" and len(held) == members and all(held.values()):
            return held
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no stable group of {members}: {group}")
        await asyncio.sleep(0.3)


@pytest.mark.kafka
@pytest.mark.postgres
async def test_three_inventory_members_share_the_partitions_on_kafka(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    events = chains(seed=6, one_topic=True)
    products, chained = events[:SKUS], events[SKUS:]
    broker = KafkaBroker(kafka_bootstrap)
    shop = Shop(broker, tmp_path / "data", database_url)
    try:
        await shop.prepare()
        processes = [
            ServiceProcess("inventory", shop.env(), f"inventory-{n}") for n in range(INSTANCES)
        ]
        shop.processes.extend(processes)
        for process in processes:
            await process.start()
        spread = await until_group(broker, INSTANCES)
        everything = set().union(*spread.values())
        third = len(chained) // 3
        async with shop.publisher() as bus:
            # Products first: they are another topic, with no order against the chains.
            await publish_surely(bus, products)
            for _ in range(120):
                if len(await shop.state("inventory")) == SKUS:
                    break
                await asyncio.sleep(0.5)
            await publish_surely(bus, chained[:third])
            await processes[1].kill()  # its partitions must move to the other two
            after = await until_group(broker, INSTANCES - 1)
            assert set().union(*after.values()) == everything, "a partition was left behind"
            assert set(after) < set(spread), "the survivors are the members they were"
            await publish_surely(bus, chained[third : 2 * third])
            await processes[1].start()  # and some come back
            await until_group(broker, INSTANCES)
            await publish_surely(bus, chained[2 * third :])
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            depth = await shop.depth()
            inventory = await shop.state("inventory")
            if depth == 0 and all(v["on_hand"] == 0 for v in inventory.values()):
                break
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(1)
        dead = await shop.dead_letters()
        assert dead == {}, f"a subject's events were applied out of order: {dead}"
        assert len(inventory) == SKUS
        wrong = {sku: v for sku, v in inventory.items() if v["on_hand"] != 0}
        assert wrong == {}, f"stock left over, so a chain broke or doubled: {wrong}"
        codes = await shop.stop_all()
        assert all(code == 0 for code in codes.values()), codes
    finally:
        await shop.dispose()
