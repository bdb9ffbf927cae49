"""Rebuilding a service's state from a recording, with the service's own handlers.

The service runs as it does in production (consumer runtime, inbox, outbox), only on
the in-process broker and a fresh SQLite file, and is fed the recorded events it
subscribes to, in the recording's order. What it emits goes to a sink: the recording
holds what the rest of the system did with those events already. Settings say
`rebuilding`, so a service sends no mail and makes no timed decisions meanwhile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbus.bootstrap import bootstrap
from agentbus.deadletters import list_dead_letters
from agentbus.envelope import Event, EventCodec
from agentbus.retry import RetryPolicy
from agentbus.service import Service
from agentbus.settings import Settings
from agentbus.transport.base import Delivery, QueueSpec

SINK = "agentbus.rebuild.sink"
_CHUNK = 500  # events per confirmed publish


@dataclass(frozen=True, slots=True)
class Rebuilt:
    service: str
    data_dir: Path
    fed: int  # recorded events the service subscribes to
    dead_letters: int  # of them, refused by the service (as they may have been live)


def rebuild_settings(base: Settings, data_dir: Path) -> Settings:
    """`base` turned to a rebuild: local files, one process, short retry waits."""
    return dataclasses.replace(
        base,
        amqp_url=None,
        database_url=None,
        data_dir=data_dir,
        partitions=1,
        kafka_bootstrap_servers=None,
        stores_on_loop=True,
        rebuilding=True,
        consumer=dataclasses.replace(
            base.consumer,
            # Derived events keep the recording's time, not the rebuild's.
            event_time="cause",
            retry=RetryPolicy(
                max_attempts=base.consumer.retry.max_attempts, base_delay=0.01, max_delay=0.1
            ),
        ),
    )


async def rebuild(
    service: Service,
    events: Sequence[Event[Any]],
    codec: EventCodec,
    settings: Settings,
    *,
    timeout: float = 600.0,
) -> Rebuilt:
    """Apply the recorded events `service` subscribes to, in order, into `settings.data_dir`."""
    wanted = [event for event in events if event.type in service.routes]
    # Whatever broker the settings name, a rebuild talks to nobody: the in-process one.
    alone = dataclasses.replace(settings, amqp_url=None, kafka_bootstrap_servers=None)
    system = bootstrap(alone, codec.catalog, [service], name="rebuild", codec=codec)
    bus, host = system.bus, system.host
    system.observe(
        QueueSpec(SINK, bindings=("#",), kind="classic", transient=True), _discard, prefetch=1024
    )
    async with system:
        for start in range(0, len(wanted), _CHUNK):
            await bus.publish_many(list(wanted[start : start + _CHUNK]))
        await host.settle(interval=0.01, stable=3, timeout=timeout)
        refused = await list_dead_letters(system.transport, [service.queue])
    return Rebuilt(service.name, settings.data_dir, len(wanted), len(refused))


async def _discard(delivery: Delivery) -> None:
    await delivery.ack()
