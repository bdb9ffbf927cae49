"""Runs several services on one connection, and stops them gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence

from agentbus.bus import Bus
from agentbus.consumer import Consumer
from agentbus.metrics import set_gauge
from agentbus.partitions import AdvisoryRoster, FileRoster, PartitionedConsumer, Roster
from agentbus.retry import dead_letter_queue
from agentbus.service import Service, ServiceEnv
from agentbus.settings import Settings

_tuned = False
# The youngest generation is collected every 50,000 allocations instead of 700. A
# consumer keeps thousands of objects alive per batch in flight and drops them by
# reference count: at 700 it ran a young collection every 24 messages and an older
# one (2.7 ms, over all that was in flight) every 240, 7% of its time; at 10,000,
# one of 7 ms every 800 messages; at 50,000, none in 20,000 messages.
_YOUNG_THRESHOLD = 50_000
# A settle that has waited this long is waiting on something slow, and from then on
# looks at most this often.
PATIENCE = 0.25
SLOW_LOOK = 0.02


def tune_gc_once() -> None:
    """Set the collector up for a consumer process, once the first services are up.

    Moves what exists by then (modules, models, compiled statements: about 200,000
    objects that live as long as the process) out of the collector's way: a full
    collection over them took 155 ms, a pause in the middle of the work each time,
    and about 15 ms after. Raises the young generation's threshold (see above).
    Once per process: what is frozen is never collected, and a process that starts
    many hosts (tests) would keep each one's garbage.
    """
    global _tuned
    if not _tuned:
        _tuned = True
        gc.freeze()
        young, middle, old = gc.get_threshold()
        gc.set_threshold(max(_YOUNG_THRESHOLD, young), middle, old)


class Host:
    """The consumers of some services sharing one bus."""

    def __init__(self, bus: Bus, services: Sequence[Service], settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.services = list(services)
        self.consumers = [self._consumer_of(service) for service in services]
        # Each consumer's queues but its dead letters, which `idle` looks at on every step.
        self._watched = [
            [s.name for s in c.topology() if s.name != dead_letter_queue(c.group)]
            for c in self.consumers
        ]
        self._started: list[Service] = []
        self.running = False

    def _consumer_of(self, service: Service) -> Consumer | PartitionedConsumer:
        settings = self.settings
        if settings.partitions == 1:
            return Consumer(service, self.bus, settings.consumer)
        roster: Roster
        if settings.database_url:
            from agentbus.store import postgres as postgres_store  # only on PostgreSQL

            roster = AdvisoryRoster(postgres_store.engine(settings.database_url), service.name)
        else:
            roster = FileRoster(settings.data_dir, service.name)
        return PartitionedConsumer(
            service, self.bus, settings.consumer, partitions=settings.partitions, roster=roster
        )

    async def start(self) -> None:
        env = ServiceEnv(self.bus, self.settings)
        for service, consumer in zip(self.services, self.consumers, strict=True):
            self._started.append(service)
            for hook in service.startup:
                await hook(env)
            await consumer.start()
        self.running = True

    async def stop(self) -> None:
        """Drain every consumer first, then run the shutdown hooks (flush outboxes)."""
        self.running = False
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        for service in reversed(self._started):
            for hook in reversed(service.shutdown):
                await hook()
        self._started.clear()

    async def idle(self) -> bool:
        """Nothing in flight, nothing queued (retries included), no outbox backlog."""
        if self._busy():
            return False
        for names in self._watched:
            for name in names:
                if await self.bus.transport.depth(name):
                    return False
        for service in self.services:
            for check in service.idle_checks:
                if not await check():
                    return False
        # Over a broker the look above takes a round trip per queue, and a message the
        # broker handed to a consumer meanwhile shows in no queue's depth: it shows here.
        return not self._busy()

    def _busy(self) -> bool:
        return any(consumer.in_flight for consumer in self.consumers)

    async def readiness(self, timeout: float = 2.0) -> dict[str, str]:
        """What keeps the host from serving: {component: problem}; empty when ready."""
        if not self.running:
            return {"host": "starting or stopping"}
        problems: dict[str, str] = {}

        async def check(name: str, probe: Callable[[], Awaitable[object]]) -> None:
            try:
                await asyncio.wait_for(probe(), timeout)
            except TimeoutError:
                problems[name] = f"no answer within {timeout:g}s"
            except Exception as exc:  # a probe reports any failure, never raises
                problems[name] = f"{type(exc).__name__}: {exc}"[:300]

        first_queue = self.consumers[0].topology()[0].name if self.consumers else None
        if first_queue is not None:
            await check("broker", lambda: self.bus.transport.depth(first_queue))
        for service in self.services:
            for index, probe in enumerate(service.ready_checks):
                suffix = f"#{index}" if index else ""
                await check(f"{service.name}{suffix}", probe)
        return problems

    async def refresh_gauges(self) -> None:
        """Read queue depths and outbox backlogs into the gauges."""
        for consumer in self.consumers:
            for spec in consumer.topology():
                with contextlib.suppress(Exception):  # a gauge goes stale, the host goes on
                    set_gauge("queue", spec.name, await self.bus.transport.depth(spec.name))
        for service in self.services:
            if service.backlog is not None:
                with contextlib.suppress(Exception):
                    set_gauge("outbox", service.name, await service.backlog())

    async def settle(
        self, *, interval: float = 0.05, stable: int = 3, timeout: float = 300
    ) -> None:
        """Wait until the system has been idle for `stable` looks in a row.

        A wait that outlasts `PATIENCE` is waiting on something slow (a model's answer,
        a delayed retry), and looks at most every `SLOW_LOOK` from then on: an offline
        replay's interval of 0 would otherwise spin a core the model server needs.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        calm = 0
        while calm < stable:
            now = loop.time()
            if now > deadline:
                raise TimeoutError(f"not idle after {timeout}s")
            calm = calm + 1 if await self.idle() else 0
            slow = now - started > PATIENCE
            await asyncio.sleep(max(interval, SLOW_LOOK) if slow else interval)

    async def run_until_signalled(self, on_started: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then drain in-flight work and return."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            if on_started is not None:
                on_started()
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
            await self.stop()
