"""Partition assignment and the file roster (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbus.partitions import FileRoster, assigned
from agentbus.retry import RetryPolicy, topology
from agentbus.transport.base import PARTITION_KEY_HEADER, Message, QueueSpec
from agentbus.transport.memory import InMemoryBroker


@pytest.mark.parametrize("members", [[0], [0, 1], [0, 3, 7], [2, 4, 5, 9, 11]])
@pytest.mark.parametrize("partitions", [1, 4, 6, 16])
def test_every_partition_has_exactly_one_member(members: list[int], partitions: int) -> None:
    taken = [p for slot in members for p in assigned(slot, members, partitions)]
    assert sorted(taken) == list(range(partitions))
    shares = [len(assigned(slot, members, partitions)) for slot in members]
    assert max(shares) - min(shares) <= 1, "the spread is uneven"


def test_file_roster_sees_members_come_and_go(tmp_path: Path) -> None:
    first, second = FileRoster(tmp_path, "inventory"), FileRoster(tmp_path, "inventory")
    assert first.members() == (0, [0])
    assert second.members() == (1, [0, 1])
    assert first.members() == (0, [0, 1])
    first.leave()
    assert second.members() == (1, [1])
    again = FileRoster(tmp_path, "inventory")
    assert again.members() == (0, [0, 1]), "a freed slot is taken again"
    other = FileRoster(tmp_path, "orders")
    assert other.members() == (0, [0]), "rosters of other services are apart"


def test_partitions_share_the_groups_dead_letter_queue_and_have_one_consumer() -> None:
    specs = topology("inventory.p2", ("stock.*",), RetryPolicy(), partition_group="inventory")
    main = specs[0]
    assert main.partition_group == "inventory"
    assert main.single_active_consumer
    assert main.dead_letter_to == "inventory.dlq"
    assert specs[-1].name == "inventory.dlq"
    retries = [s for s in specs if ".retry." in s.name]
    assert retries
    assert all(s.dead_letter_to == "inventory.p2" for s in retries)


def test_the_in_memory_broker_keeps_each_key_on_one_partition() -> None:
    broker = InMemoryBroker()
    for p in range(4):
        broker.declare(QueueSpec(f"inv.p{p}", bindings=("stock.*",), partition_group="inv"))
    broker.declare(QueueSpec("audit", bindings=("#",)))
    for n in range(200):
        key = f"SKU-{n % 25}"
        broker.route(
            Message(b"{}", "stock.received", f"id-{n}", headers={PARTITION_KEY_HEADER: key})
        )
    where: dict[str, set[str]] = {}
    for p in range(4):
        for entry in broker.queues[f"inv.p{p}"].ready:
            where.setdefault(str(entry.message.headers[PARTITION_KEY_HEADER]), set()).add(f"p{p}")
    assert len(where) == 25
    assert all(len(found) == 1 for found in where.values())
    assert sum(len(broker.queues[f"inv.p{p}"].ready) for p in range(4)) == 200
    assert all(broker.queues[f"inv.p{p}"].ready for p in range(4)), "a partition got nothing"
    assert len(broker.queues["audit"].ready) == 200, "other queues still get every event"
