"""Running services in a test: the in-process broker, SQLite in a folder, and a tap.

    async with Harness(tmp_path, [my_agent_service], catalog=CATALOG) as shop:
        await shop.publish([event, ...])          # and wait until all is handled
        assert shop.of_type("my.suggested")

Everything runs as in production (the same consumer runtime, inbox, outbox and
relay), only in one process; the tap records every event that crosses the bus.
Given a transport (a real broker's, not started), the same runs over that broker;
given a `database_url`, the services keep their state in PostgreSQL. The system is
built by `agentbus.bootstrap`, as `agentbus run` builds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentbus.bootstrap import bootstrap
from agentbus.envelope import Event
from agentbus.errors import MalformedEvent
from agentbus.service import Service
from agentbus.settings import Settings
from agentbus.transport.base import Delivery, Message, QueueSpec, Transport

__all__ = ["Harness"]

TAP = "test.tap"


class Harness:
    def __init__(
        self,
        data_dir: Path,
        services: Sequence[Service],
        *,
        catalog: Mapping[str, type[BaseModel]],
        transport: Transport | None = None,
        database_url: str | None = None,
    ) -> None:
        base = Settings.from_env({"AGENTBUS_RETRY_DELAY": "0.2"})
        # Derived events carry their cause's time, so tests can tell a story in days.
        self.settings = dataclasses.replace(
            base,
            data_dir=data_dir,
            database_url=database_url,
            consumer=dataclasses.replace(base.consumer, event_time="cause"),
        )
        self.system = bootstrap(self.settings, catalog, services, transport=transport)
        self.transport = self.system.transport
        self.bus = self.system.bus
        self.host = self.system.host
        self.seen: list[Event[Any]] = []
        self.system.observe(
            QueueSpec(TAP, bindings=("#",), transient=True), self._tap, prefetch=1000
        )

    async def _tap(self, delivery: Delivery) -> None:
        message = delivery.message
        # Whatever a test publishes, valid or not, in either content mode: the
        # services judge it; the tap keeps only what is an event.
        with contextlib.suppress(MalformedEvent):
            self.seen.append(
                self.bus.codec.decode(
                    message.body,
                    content_type=message.content_type,
                    headers=message.headers,
                    header_prefix=self.transport.broker_info.header_prefix,
                )
            )
        await delivery.ack()

    async def __aenter__(self) -> Harness:
        await self.system.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.system.__aexit__(*exc)

    async def publish(self, events: Sequence[Event[Any]], *, timeout: float = 60) -> None:
        """Publish, then wait until every service is idle (outboxes included)."""
        await self.bus.publish_many(events)
        await self.settle(timeout)

    async def send(self, messages: Sequence[Message], *, timeout: float = 60) -> None:
        """Publish messages as they are (as another client would), then wait as `publish`."""
        await self.transport.publish_many(messages)
        await self.settle(timeout)

    async def settle(self, timeout: float) -> None:
        """Until the services are idle and the tap has taken all there is to see: on a
        real broker it reads the events the services published a moment after them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            await self.host.settle(interval=0.02, stable=3, timeout=max(left, 0.1))
            if not await self.transport.depth(TAP) and await self.host.idle():
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the tap not caught up after {timeout}s")
            await asyncio.sleep(0.02)

    def of_type(self, event_type: str) -> list[Event[Any]]:
        return [event for event in self.seen if event.type == event_type]
