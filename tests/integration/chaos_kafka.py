"""The chaos runs on Kafka: topics and groups under a prefix of the run's own (nothing
shared is deleted), the lag of each service's group, its members and what each holds,
a restart of the broker, and a group member SIGKILLed while it holds records unsettled.

A service stores its positions with its effects and seeks to them on assignment, and
commits to Kafka a little later: a SIGKILL leaves Kafka's offsets behind the stored
ones, and they stay behind until the partition gets another record. So the lag counted
here starts at the later of the two.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.admin import DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from agentbus.transport.kafka import KafkaTransport
from events import CATALOG
from tests.contract.harness import KafkaHarness
from tests.integration.chaos_broker import AGENT, SERVICES, StoredPositions
from tests.integration.chaos_processes import ServiceProcess, command

SERVICES_COMMAND = str(Path(__file__).resolve().parents[2] / "deploy/dev/services")
# The broker's least: a SIGKILLed member's partitions wait this long for the group to
# move them (at the default 10 s, 40 s of a run with four kills).
SESSION_TIMEOUT_MS = 6000
Partition = tuple[str, int]


@dataclass
class Group:
    state: str
    members: dict[str, set[Partition]]  # member id -> the partitions it holds


class _DescribeGroups(Request[DescribeGroupsRequest_v2]):  # type: ignore[misc]
    """DescribeGroups at v2: aiokafka pairs its v3 request with the v2 answer's layout,
    and fails to read what the broker sends back."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[DescribeGroupsRequest_v2]) -> Any:
        return request_struct_class(self._groups)


@dataclass
class KafkaBroker:
    bootstrap: str
    name: str = "kafka"
    ordered: bool = False
    faults: ClassVar[Mapping[str, str]] = {"kafka": "broker_restart"}
    harness: KafkaHarness = field(init=False)
    _probe: KafkaTransport | None = field(default=None, init=False)
    _restart_backlog: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.harness = KafkaHarness(self.bootstrap)

    @property
    def prefix(self) -> str:
        return self.harness.prefix

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "AGENTBUS_KAFKA_PREFIX": self.prefix,
            "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        }

    def transport(self, name: str) -> KafkaTransport:
        return KafkaTransport(
            self.bootstrap,
            prefix=self.prefix,
            event_types=list(CATALOG),
            client_id=name,
            metadata_max_age_ms=2000,
        )

    async def prepare(self) -> None:
        """Nothing to clear: the run's prefix is new; the services make their topics."""

    async def dispose(self) -> None:
        await self._drop_probe()
        await self.harness.cleanup()  # the run's topics and groups

    async def _transport(self) -> KafkaTransport:
        if self._probe is None:
            probe = self.transport("chaos-probe")
            await probe.start()
            self._probe = probe
        return self._probe

    async def _drop_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()

    async def unsettled(self, service: str, stored: StoredPositions) -> dict[TopicPartition, int]:
        """Records per partition the service's group has not settled."""
        backlog = await (await self._transport()).backlog(service)
        positions = await stored(service)
        return {
            tp: max(0, end - max(position, positions.get((tp.topic, tp.partition), 0)))
            for tp, (position, end) in backlog.items()
        }

    async def depth(self, stored: StoredPositions) -> int:
        total = 0
        for service in (*SERVICES, AGENT):
            try:
                total += sum((await self.unsettled(service, stored)).values())
            except KeyError:
                continue  # not declared in this run
        return total

    async def dead_letters(self) -> dict[str, int]:
        probe = await self._transport()
        found: dict[str, int] = {}
        for service in (*SERVICES, AGENT):
            try:
                # No group reads a dead-letter topic: its lag is every record it holds.
                count = await probe.depth(f"{service}.dlq")
            except KeyError:
                continue
            if count:
                found[f"{service}.dlq"] = count
        return found

    async def groups(self, services: Sequence[str]) -> dict[str, Group]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="chaos-admin")
        await admin.start()
        try:
            responses = []
            for service in services:
                node = await admin.find_coordinator(self.prefix + service)
                request = _DescribeGroups([self.prefix + service])
                responses.append(await admin._send_request_to_node(node, request))
        finally:
            await admin.close()
        found: dict[str, Group] = {}
        for response in responses:
            for _error, group, state, _ptype, _protocol, members, *_ in response.groups:
                held: dict[str, set[Partition]] = {}
                for member_id, _client, _host, _metadata, assignment in members:
                    tps = (
                        ConsumerProtocolMemberAssignment.decode(assignment).partitions()
                        if assignment
                        else []
                    )
                    held[member_id] = {(tp.topic, tp.partition) for tp in tps}
                found[group.removeprefix(self.prefix)] = Group(state, held)
        return found

    async def consuming(self, expected: Mapping[str, int], stored: StoredPositions) -> bool:
        groups = await self.groups(list(expected))
        for service, members in expected.items():
            group = groups.get(service)
            if group is None or group.state != "Stable" or len(group.members) != members:
                return False
            if not all(group.members.values()):
                return False
        if self._restart_backlog is not None:
            # A group restored from the log looks Stable before its members are back:
            # consuming means what waited when the broker came back is being settled.
            backlog = await self.depth(stored)
            if self._restart_backlog < 0:
                self._restart_backlog = backlog  # the first look since it came back
            if backlog and backlog >= self._restart_backlog:
                return False
            self._restart_backlog = None
        return True

    async def inject(self, fault: str) -> float:
        if fault != "kafka":
            raise ValueError(f"unknown fault {fault!r}")
        began = time.monotonic()
        await self._drop_probe()
        await command(SERVICES_COMMAND, "down", "kafka")
        await command(SERVICES_COMMAND, "up", "kafka")
        self._restart_backlog = -1  # measured at the first look once it is back
        return time.monotonic() - began

    async def tap_suggestions(self) -> None:
        """Nothing to do: the topic keeps what crossed it."""

    async def suggestions(self) -> dict[str, set[str]]:
        topic = self.prefix + "restock.recommended"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="chaos-admin")
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        found: dict[str, set[str]] = {}
        if not partitions:
            return found
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id="chaos-tap")
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        body: dict[str, Any] = json.loads(record.value)
                        trigger = str(body["data"]["trigger_event_id"])
                        found.setdefault(trigger, set()).add(str(body["id"]))
        finally:
            await consumer.stop()
        return found


@dataclass
class MidBatchKill:
    """A member SIGKILLed with records of its partitions unsettled, and their move."""

    moved_partitions: int
    unsettled_on_moved: int  # records of the victim's partitions not settled at the kill
    rebalance_seconds: float  # the kill until the survivor holds every partition
    rejoin_seconds: float  # the victim's restart until the group is whole again


async def kill_mid_batch(
    broker: KafkaBroker,
    service: str,
    victim: ServiceProcess,
    stored: StoredPositions,
    timeout: float = 120.0,
) -> MidBatchKill:
    """SIGKILL `victim`, one of two members of `service`'s group, while it holds unsettled
    records; wait until the other holds all, then start the victim again.

    The victim is frozen first, while the segment is still being published: from then on
    what reaches its partitions stays unsettled, however fast this machine drains the
    rest. The kill follows once every member owes records, or after a third of the
    group's session: the frozen member's last heartbeat can be a third of a session old
    already (heartbeats come three to a session), so it is still in the group then,
    with a third to spare. Waiting 5 s at a 6 s session, the group could drop the frozen
    member first (a CI run timed out so), and then no kill could follow."""
    victim.freeze()
    deadline = time.monotonic() + SESSION_TIMEOUT_MS / 3000
    while True:
        [group] = (await broker.groups([service])).values()
        unsettled = await broker.unsettled(service, stored)
        owed = {
            member: sum(unsettled.get(TopicPartition(*p), 0) for p in held)
            for member, held in group.members.items()
        }
        if len(owed) == 2 and (all(owed.values()) or time.monotonic() > deadline):
            break
        if time.monotonic() > deadline + timeout:
            raise TimeoutError(f"{service}: not two members holding partitions: {group}")
        await asyncio.sleep(0.1)
    await victim.kill()
    hit = time.monotonic()
    everything = set().union(*group.members.values())
    while True:
        [now] = (await broker.groups([service])).values()
        held = list(now.members.values())
        if now.state == "Stable" and len(held) == 1 and held[0] >= everything:
            break
        if time.monotonic() > hit + timeout:
            raise TimeoutError(f"{service}: the partitions did not move in {timeout}s: {now}")
        await asyncio.sleep(0.2)
    moved_at = time.monotonic()
    [survivor] = now.members
    [gone] = set(group.members) - {survivor}
    moved = group.members[gone]
    await victim.start_surely()
    while True:
        [whole] = (await broker.groups([service])).values()
        if whole.state == "Stable" and len(whole.members) == 2 and all(whole.members.values()):
            break
        if time.monotonic() > moved_at + timeout:
            raise TimeoutError(f"{service}: the victim did not rejoin in {timeout}s")
        await asyncio.sleep(0.2)
    return MidBatchKill(
        moved_partitions=len(moved),
        unsettled_on_moved=sum(unsettled.get(TopicPartition(*p), 0) for p in moved),
        rebalance_seconds=moved_at - hit,
        rejoin_seconds=time.monotonic() - moved_at,
    )
