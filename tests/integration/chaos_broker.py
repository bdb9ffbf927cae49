"""What a chaos run needs of a broker, whichever it is: the services' settings, a
publisher, how much is still waiting, the dead letters, whether every service consumes,
the broker's own faults, and the suggestions that crossed it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar, Protocol

from agentbus.transport.base import Transport

SERVICES: tuple[str, ...] = ("inventory", "orders", "payments")
AGENT = "restock-agent"
# `agentbus record --queue` in a process of its own, killed like the services (RabbitMQ).
RECORDER = "chaos-recorder"
SHOP_QUEUES: tuple[str, ...] = (*SERVICES, AGENT, RECORDER)

# A service's positions stored in its own database: (topic, partition) -> next offset.
StoredPositions = Callable[[str], Awaitable[Mapping[tuple[str, int], int]]]


class Broker(Protocol):
    name: str
    # Whether one queue gets every event in publish order (RabbitMQ), or only the events
    # of one type and key (Kafka): the stream is built to suit.
    ordered: bool
    # Fault of a chaos plan -> its name in the report; each is caused by `inject`.
    faults: ClassVar[Mapping[str, str]]

    def env(self) -> dict[str, str]:
        """The settings that point a service process at this broker."""

    def transport(self, name: str) -> Transport: ...

    async def prepare(self) -> None: ...

    async def dispose(self) -> None: ...

    async def depth(self, stored: StoredPositions) -> int:
        """What the services have yet to settle (dead letters not counted)."""

    async def dead_letters(self) -> dict[str, int]:
        """Dead letters per dead-letter queue, those that hold any."""

    async def consuming(self, expected: Mapping[str, int], stored: StoredPositions) -> bool:
        """Whether each service's queue has its `expected` consumers (again)."""

    async def inject(self, fault: str) -> float:
        """Cause the fault and end it; returns how long the broken part was down."""

    async def tap_suggestions(self) -> None: ...

    async def suggestions(self) -> dict[str, set[str]]:
        """Every suggestion that crossed the broker: trigger id -> suggestion event ids."""
