"""The composition root: settings in, a system of transport, bus, host and stores out.

    system = bootstrap(settings, catalog, services, name="agentbus run inventory")
    system.observe(QueueSpec("tap", bindings=("#",), transient=True), tap, prefetch=1000)
    async with system:        # transport up, observers consuming, services started
        ...

`agentbus run`, the demo, the offline replay, a rebuild and the test harness all
build here, so the broker is chosen by one rule and things start and stop in one
order. Nothing here touches process-wide state (the garbage collector's policy and
the like): that is the business of the commands' entry points (`agentbus run`, and
`agentbus eval`, a process of its own), since a harness, a replay or the demo shares
its process with whatever else runs there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import BaseModel

from agentbus.bus import Bus
from agentbus.envelope import EventCodec
from agentbus.errors import ConfigurationError
from agentbus.host import Host
from agentbus.service import Service
from agentbus.settings import Settings
from agentbus.store import Database, open_database
from agentbus.transport.base import DeliveryHandler, QueueSpec, Transport
from agentbus.transport.memory import InMemoryBroker

__all__ = ["NO_BROKER", "System", "bootstrap", "transport_for", "with_amqp_url"]

NO_BROKER = (
    "no broker: set KAFKA_BOOTSTRAP_SERVERS (e.g. 127.0.0.1:9092), or AMQP_URL "
    "(e.g. amqp://guest:guest@127.0.0.1:5672/) or --amqp-url"
)


def with_amqp_url(settings: Settings, url: str | None) -> Settings:
    """`settings` with an explicit AMQP URL (`--amqp-url`), which wins over Kafka too."""
    if url is None:
        return settings
    return dataclasses.replace(
        settings, amqp_url=url or settings.amqp_url, kafka_bootstrap_servers=None
    )


def transport_for(
    settings: Settings, *, name: str, event_types: Iterable[str] = (), embedded: bool = True
) -> Transport:
    """The broker the settings name: Kafka when `kafka_bootstrap_servers` is set (its
    topics made for `event_types`), else RabbitMQ at `amqp_url`, else the in-process
    broker; without `embedded`, a `ConfigurationError` instead, for processes that
    talk to others and would be alone on an in-process broker."""
    # The brokers' clients are imported only when chosen: a test or an offline replay on
    # the in-process broker has no use for them.
    if settings.kafka_bootstrap_servers:
        from agentbus.transport.kafka import KafkaTransport

        return KafkaTransport(
            settings.kafka_bootstrap_servers,
            prefix=settings.kafka_prefix,
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            event_types=event_types,
            client_id=name.replace(" ", "-"),
        )
    if settings.amqp_url:
        from agentbus.transport.rabbitmq import RabbitTransport

        return RabbitTransport(settings.amqp_url, exchange=settings.exchange, connection_name=name)
    if not embedded:
        raise ConfigurationError(NO_BROKER)
    return InMemoryBroker(exchange=settings.exchange).connect()


@dataclasses.dataclass(frozen=True, slots=True)
class _Observer:
    queue: QueueSpec
    handler: DeliveryHandler
    prefetch: int


class System:
    """A transport, its bus and a host of services, started and stopped as one."""

    def __init__(self, settings: Settings, transport: Transport, bus: Bus, host: Host) -> None:
        self.settings = settings
        self.transport = transport
        self.bus = bus
        self.host = host
        self._observers: list[_Observer] = []
        self._hosting = False

    def observe(self, queue: QueueSpec, handler: DeliveryHandler, *, prefetch: int) -> None:
        """Consume `queue` from `open` on, before any service starts: an observer then
        misses nothing the services publish, start-up hooks included."""
        self._observers.append(_Observer(queue, handler, prefetch))

    async def open(self) -> None:
        """Connect, and start the observers; the services are not started yet."""
        await self.transport.start()
        for observer in self._observers:
            await self.transport.declare([observer.queue])
            await self.transport.consume(
                observer.queue.name, observer.handler, prefetch=observer.prefetch
            )

    async def start(self) -> None:
        self._hosting = True  # a start that fails halfway still has services to stop
        await self.host.start()

    async def serve_until_signalled(self, on_started: Callable[[], None] | None = None) -> None:
        """Start the services, serve until SIGINT or SIGTERM, then drain and stop them."""
        await self.host.run_until_signalled(on_started)

    async def close(self) -> None:
        """Stop the services (draining in-flight work and outboxes), then disconnect."""
        try:
            if self._hosting:
                self._hosting = False
                await self.host.stop()
        finally:
            await self.transport.close()

    def database(self, service: str, *, outage_limit: float = 120.0) -> Database:
        """A service's database as its own store opens it, for reading it from outside."""
        return open_database(
            service,
            self.bus.codec,
            url=self.settings.database_url,
            data_dir=self.settings.data_dir,
            outage_limit=outage_limit,
            on_loop=self.settings.stores_on_loop,
            scratch=self.settings.sqlite_scratch,
        )

    async def __aenter__(self) -> System:
        await self.open()
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def bootstrap(
    settings: Settings,
    catalog: Mapping[str, type[BaseModel]],
    services: Sequence[Service],
    *,
    name: str = "agentbus",
    transport: Transport | None = None,
    embedded: bool = True,
    codec: EventCodec | None = None,
) -> System:
    """The system `settings` describe, running `services` over events of `catalog`.

    `transport`, given (not started), is used instead of the one the settings name: a
    test's or a benchmark's broker. `name` names the connection to the broker.
    """
    if transport is None:
        transport = transport_for(settings, name=name, event_types=catalog, embedded=embedded)
    bus = Bus(transport, codec if codec is not None else EventCodec(catalog))
    return System(settings, transport, bus, Host(bus, services, settings))
