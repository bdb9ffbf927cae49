"""Runs several services on one connection, and stops them gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

from agentbus.bus import Bus
from agentbus.consumer import Consumer, ConsumerSettings
from agentbus.service import Service


class Host:
    """The consumers of some services sharing one bus."""

    def __init__(
        self, bus: Bus, services: Sequence[Service], settings: ConsumerSettings | None = None
    ) -> None:
        self.bus = bus
        self.consumers = [Consumer(service, bus, settings) for service in services]

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()

    async def stop(self) -> None:
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))

    async def run_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then drain in-flight work and return."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
            await self.stop()
