"""The chaos runs on RabbitMQ: an exchange per run, the shop's fixed queue names (held
under `exclusive_queues`), counts as the queues answer them, and the broker's faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aio_pika

from agentbus.transport.rabbitmq import RabbitTransport, connect_first
from tests.integration.chaos_broker import SHOP_QUEUES, StoredPositions
from tests.integration.chaos_processes import command
from tests.integration.rabbit_cluster import CLUSTER_FAULTS, ClusterFaults, spread

SUGGESTION_TAP = "test.chaos.suggestions"


def is_shop_queue(name: str) -> bool:
    return any(name == s or name.startswith(f"{s}.") for s in SHOP_QUEUES)


def is_dlq(name: str) -> bool:
    return name.endswith(".dlq")


async def queue_names(nodes: Sequence[str] = ()) -> list[str]:
    """Every queue on the broker (rabbitmqctl; its message counts lag by seconds); on a
    cluster, as the first of its `nodes` that runs lists them."""
    failure: Exception | None = None
    for node in nodes:
        try:
            return await _queue_names("-n", node)
        except (RuntimeError, TimeoutError) as exc:
            failure = exc
    if nodes:
        raise RuntimeError(f"no node of {', '.join(nodes)} lists queues: {failure}")
    return await _queue_names()


async def _queue_names(*node: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *node,
        "list_queues",
        "name",
        "--quiet",
        "--no-table-headers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl list_queues failed: {err.decode()[-500:]}")
    return [line.strip() for line in out.decode().splitlines() if line.strip()]


async def queue_counts(amqp_url: str, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(ready messages, consumers) per queue, as the queue itself answers right now."""
    counts: dict[str, tuple[int, int]] = {}
    connection = await connect_first(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()  # gone: the broker closed the channel
                continue
            result = queue.declaration_result
            counts[name] = (result.message_count or 0, result.consumer_count or 0)
    return counts


async def clean_broker(amqp_url: str, exchange: str, nodes: Sequence[str] = ()) -> None:
    """Delete the shop's queues (main, retry, dead letter) and the exchange."""
    names = [name for name in await queue_names(nodes) if is_shop_queue(name)]
    connection = await connect_first(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
        for service in SHOP_QUEUES:  # the hash exchanges of partitioned queues
            await channel.exchange_delete(f"{exchange}.{service}")


@dataclass
class RabbitBroker:
    amqp_url: str
    exchange: str = field(default_factory=lambda: f"agentbus.test.{uuid.uuid4().hex[:12]}")
    name: str = "rabbitmq"
    ordered: bool = True
    # On a cluster (amqp_url lists its nodes): the nodes' names (for rabbitmqctl -n) and
    # the node faults, each node back a few seconds later.
    nodes: tuple[str, ...] = ()
    cluster: ClusterFaults | None = None
    faults: ClassVar[Mapping[str, str]] = {
        "connections": "connections_closed",
        "rabbitmq": "broker_restart",
        "leader_kill": "leader_node_killed",
        "node_stop": "node_stopped",
    }

    def env(self) -> dict[str, str]:
        return {"AMQP_URL": self.amqp_url, "AGENTBUS_EXCHANGE": self.exchange}

    def service_url(self, service: str) -> str:
        """On a cluster each service starts at another node, so that every node carries
        some of the connections."""
        if not self.nodes:
            return self.amqp_url
        return spread(self.amqp_url, SHOP_QUEUES.index(service))

    def transport(self, name: str) -> RabbitTransport:
        return RabbitTransport(self.amqp_url, exchange=self.exchange, connection_name=name)

    async def prepare(self) -> None:
        await clean_broker(self.amqp_url, self.exchange, self.nodes)

    async def dispose(self) -> None:
        await clean_broker(self.amqp_url, self.exchange, self.nodes)
        with contextlib.suppress(Exception):
            connection = await connect_first(self.amqp_url)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(SUGGESTION_TAP)

    async def counts(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of each of the shop's queues."""
        names = [name for name in await queue_names(self.nodes) if is_shop_queue(name)]
        return await queue_counts(self.amqp_url, names)

    async def depth(self, stored: StoredPositions | None = None) -> int:
        # Main and retry queues; deliveries in flight are not counted, so `settle` also
        # waits for the states to be still.
        return sum(n for name, (n, _) in (await self.counts()).items() if not is_dlq(name))

    async def dead_letters(self) -> dict[str, int]:
        return {name: n for name, (n, _) in (await self.counts()).items() if is_dlq(name) and n}

    async def consuming(self, expected: Mapping[str, int], stored: StoredPositions) -> bool:
        counts = await queue_counts(self.amqp_url, list(expected))
        return all(counts.get(name, (0, 0))[1] >= n for name, n in expected.items())

    async def inject(self, fault: str) -> float:
        if self.cluster is not None and fault in CLUSTER_FAULTS:
            return await self.cluster.inject(fault)
        began = asyncio.get_running_loop().time()
        if fault == "connections":
            await command("rabbitmqctl", "close_all_connections", "chaos: connections closed")
        elif fault == "rabbitmq":
            await command("rabbitmqctl", "stop_app")
            await command("rabbitmqctl", "start_app")
            await command("rabbitmqctl", "await_startup")
        else:
            raise ValueError(f"unknown fault {fault!r}")
        return asyncio.get_running_loop().time() - began

    def _tap_arguments(self) -> dict[str, Any] | None:
        # On a cluster a classic queue lives on one node, and would miss what comes while
        # that node is down.
        return {"x-queue-type": "quorum"} if self.nodes else None

    async def tap_suggestions(self) -> None:
        connection = await connect_first(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                SUGGESTION_TAP, durable=True, arguments=self._tap_arguments()
            )
            await queue.bind(exchange, routing_key="restock.recommended")

    async def suggestions(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        connection = await connect_first(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                SUGGESTION_TAP, durable=True, arguments=self._tap_arguments()
            )
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                body = json.loads(message.body)
                trigger = str(body["data"]["trigger_event_id"])
                found.setdefault(trigger, set()).add(str(body["id"]))
            await channel.queue_delete(SUGGESTION_TAP)
        return found
