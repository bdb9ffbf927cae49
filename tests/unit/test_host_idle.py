"""When a host calls itself idle: a delivery handed to a consumer while the host looks
at the queues (over a broker, a round trip per queue) keeps it busy.

The in-process broker stands in for RabbitMQ here: its `depth` is wrapped to hand a
delivery to the consumer in the middle of the look, which a real broker does only when
the timing falls that way."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentbus.bootstrap import bootstrap
from agentbus.envelope import Event
from agentbus.service import Context, Service
from agentbus.settings import Settings
from tests.contract.catalog import CATALOG, MODELS, sample


async def test_a_delivery_taken_during_the_look_at_the_queues_keeps_the_host_busy(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    service = Service("holder")

    @service.handles(MODELS["order.created"])
    async def hold(event: Event[Any], ctx: Context) -> None:
        await release.wait()

    system = bootstrap(replace(Settings.from_env({}), data_dir=tmp_path), CATALOG, [service])
    async with system:
        assert await system.host.idle()
        depth = system.transport.depth
        sent: list[str] = []

        async def depth_while_a_delivery_arrives(queue: str) -> int:
            if not sent:
                sent.append(queue)
                await system.bus.publish(sample("order.created", "a", 1))
                for _ in range(5):  # the delivery reaches the consumer
                    await asyncio.sleep(0)
            return await depth(queue)

        system.transport.depth = depth_while_a_delivery_arrives  # type: ignore[method-assign]
        try:
            idle = await system.host.idle()
            assert sent, "the delivery arrived during the look"
            assert not idle, "the consumer holds the delivery"
        finally:
            release.set()
        await system.host.settle(interval=0.0, timeout=10)
        assert await system.host.idle()
