"""RabbitMQ adapter over aio-pika.

A robust connection re-opens channels, re-declares what was declared through them
and restores consumers after the broker drops the connection or restarts. Given the
nodes of a cluster (`AMQP_URL` with several addresses), it connects to the first that
answers and, when that node goes, to the next one that does: the queues are quorum
queues, there on every node. One channel publishes (with confirms, returns raising);
each consumer has its own channel with its own prefetch, so a slow consumer never
stalls the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from itertools import chain
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_connection import RobustConnection
from aio_pika.robust_queue import RobustQueue
from yarl import URL

from agentbus.errors import BrokerUnavailable, Unroutable
from agentbus.transport.amqp_addresses import amqp_addresses
from agentbus.transport.base import (
    EVENTS_EXCHANGE,
    PARTITION_KEY_HEADER,
    BrokerInfo,
    Delivery,
    DeliveryHandler,
    Message,
    PositionStore,
    QueueSpec,
    Subscription,
    describe,
)

# Points of each partition on the hash ring: more points, a more even spread.
HASH_WEIGHT = "20"
# The robust connection's one attempt to connect, which its reconnect loop repeats. It is
# private to aio-pika (it has no hook for a list of addresses); a unit test checks that it
# is still there, since without it a connection would stay on one address.
CONNECT_ONCE = "_RobustConnection__connect_transport"
# The robust channel's lock and flag around restoring it as a whole: re-subscribing the
# consumers the broker cancelled takes the same lock (see _LeanChannel), and the same test
# checks they are there.
RESTORE_LOCK = "_RobustChannel__restore_lock"
RESTORED = "_RobustChannel__restored"
CONNECT_TIMEOUT = 10.0
# Seconds a connection that moved to another node waits before restoring its channels.
FAILOVER_PAUSE = 5.0

log = logging.getLogger(__name__)


class _RabbitDelivery:
    """A delivery as aiormq hands it over, read lazily."""

    __slots__ = ("_channel", "_delivered", "_message", "delivery_tag", "queue", "redelivered")

    def __init__(self, delivered: aiormq.abc.DeliveredMessage, queue: str) -> None:
        self._delivered = delivered
        self.queue = queue
        self._message: Message | None = None
        # A delivery must still be told apart (to be forgotten) after its channel went.
        self._channel: aiormq.abc.AbstractChannel = delivered.channel
        # Read once: the acks look them up several times per delivery.
        self.delivery_tag: int = delivered.delivery_tag or 0
        self.redelivered: bool = bool(delivered.redelivered)

    @property
    def message(self) -> Message:
        if self._message is None:
            delivered = self._delivered
            properties = delivered.header.properties
            self._message = Message(
                body=delivered.body,
                routing_key=delivered.routing_key or "",
                message_id=properties.message_id,
                type=properties.message_type,
                content_type=properties.content_type,
                headers=dict(properties.headers or {}),
            )
        return self._message

    @property
    def channel_key(self) -> object:
        return self._channel

    @property
    def stale(self) -> bool:
        return self._channel.is_closed

    async def ack(self, *, multiple: bool = False) -> None:
        try:
            await self._channel.basic_ack(self.delivery_tag, multiple=multiple)
        except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"ack failed: {exc}") from exc

    async def reject(self, *, requeue: bool) -> None:
        try:
            await self._channel.basic_reject(self.delivery_tag, requeue=requeue)
        except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"reject failed: {exc}") from exc


DeliveredCallback = Callable[[aiormq.abc.DeliveredMessage], Coroutine[Any, Any, None]]


class _LeanQueue(RobustQueue):
    """A robust queue whose consumers take aiormq's deliveries as they come.

    aio-pika wraps each delivery in an `IncomingMessage` and runs the callback in a
    task of its own, on top of the task aiormq already made: measured, a sixth of
    a consumer's time per message. Consumers are still recorded where the robust
    queue restores them from after a reconnect.
    """

    async def consume(  # type: ignore[override]
        self,
        callback: DeliveredCallback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,
        robust: bool = True,
    ) -> str:
        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name,
            consumer_callback=callback,
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        tag = result.consumer_tag
        if tag is None:
            raise BrokerUnavailable(f"the broker gave no consumer tag for {self.name!r}")
        if robust:
            self._consumers[tag] = {
                "callback": callback,
                "no_ack": no_ack,
                "exclusive": exclusive,
                "arguments": arguments,
            }
        return tag


class _LeanChannel(RobustChannel):
    QUEUE_CLASS = _LeanQueue

    async def _restore_missing_consumers(self, channel: aiormq.Channel) -> bool:
        """Subscribe again the consumers the broker cancelled, through the lean queue.

        A quorum queue whose leader went with its node cancels the consumers that were
        on it, and aio-pika re-subscribes them here once the queue answers. Its own
        version calls the base queue's `consume`, which hands the callback aio-pika's
        messages rather than aiormq's deliveries: seen on the cluster, a consumer moved
        to another node, was cancelled as the new leader took over, and every delivery
        after that failed in its handler. Returns whether to try again.
        """
        retry = False
        async with getattr(self, RESTORE_LOCK):
            for queue in tuple(chain(*self._queues.values())):
                if not isinstance(queue, _LeanQueue):
                    continue
                tags = queue._consumers.keys() - channel.consumers.keys()
                if not tags:
                    continue
                try:
                    probe = await channel.connection.channel(publisher_confirms=False, timeout=5)
                    try:
                        await queue._probe(probe)  # the queue answers: it has a leader again
                    finally:
                        await probe.close()
                    if not getattr(self, RESTORED).is_set() or channel.is_closed:
                        return False  # the channel is being restored as a whole
                    for tag in tags:
                        kwargs = queue._consumers.get(tag)
                        if kwargs is None or tag in channel.consumers:
                            continue
                        await queue.consume(consumer_tag=tag, timeout=5, **kwargs)
                        log.warning(
                            "RabbitMQ: %s subscribed again after the broker cancelled it",
                            queue.name,
                        )
                except Exception as exc:  # the queue has no leader yet: the next round retries
                    log.warning("RabbitMQ: %s not subscribed again yet: %s", queue.name, _safe(exc))
                    retry = True
        return retry


class _LeanConnection(RobustConnection):
    CHANNEL_CLASS = _LeanChannel


class _FailoverConnection(_LeanConnection):
    """A robust connection over the addresses of a cluster's nodes.

    Each attempt (the first, and every reconnect) tries the address it was last connected
    to, then the others in their order, so a client stays on its node while the node
    stays, and moves on when it goes; the robust restore then re-declares and
    re-subscribes on whichever node answered.
    """

    def __init__(
        self, addresses: Sequence[str], *, failover_pause: float = FAILOVER_PAUSE, **kwargs: Any
    ) -> None:
        self._addresses = [URL(address) for address in addresses]
        self._turn = 0
        self._failover_pause = failover_pause
        self._last: URL | None = None
        super().__init__(self._addresses[0], **kwargs)

    async def _on_connected(self) -> None:
        moved = self._last is not None and self.url != self._last
        self._last = self.url
        if moved and self._failover_pause > 0:
            # Deliveries the lost node's consumers held go back to their queues once the
            # queue (its new leader, when the leader went with the node) has seen them go.
            # Re-subscribed before that, a consumer gets later messages first and the held
            # ones after them: seen on the cluster, inventory then applied orders ahead of
            # the stock they follow. Nothing is re-subscribed before the pause is over.
            log.warning(
                "RabbitMQ: moved to %s:%s; re-subscribing in %.1f s",
                self.url.host,
                self.url.port,
                self._failover_pause,
            )
            await asyncio.sleep(self._failover_pause)
        await super()._on_connected()

    async def _RobustConnection__connect_transport(self) -> None:
        attempt = getattr(super(), CONNECT_ONCE)
        failure: BaseException | None = None
        for _ in self._addresses:
            try:
                await attempt()
                return
            except CONNECTION_EXCEPTIONS as exc:
                failure = exc
                if len(self._addresses) == 1:
                    break
                tried = self.url
                self._turn = (self._turn + 1) % len(self._addresses)
                self.url = self._addresses[self._turn]
                log.warning(
                    "RabbitMQ at %s:%s: %s; trying %s:%s",
                    tried.host,
                    tried.port,
                    _safe(exc),
                    self.url.host,
                    self.url.port,
                )
        assert failure is not None
        raise failure


class _RabbitSubscription:
    def __init__(self, queue: AbstractQueue, tag: str, channel: AbstractChannel) -> None:
        self._queue = queue
        self._tag = tag
        self._channel = channel

    async def cancel(self) -> None:
        if self._channel.is_closed:
            return
        # If the channel went away, the broker has stopped delivering anyway.
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await self._queue.cancel(self._tag)

    async def close(self) -> None:
        if self._channel.is_closed:
            return
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await self._channel.close()


def _to_amqp(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        message_id=message.message_id,
        type=message.type,
        headers=dict(message.headers),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class RabbitTransport:
    """A robust connection to RabbitMQ; `url` is an `amqp://` or `amqps://` URL, or the
    comma-separated addresses of a cluster's nodes (agentbus.transport.amqp_addresses)."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str = EVENTS_EXCHANGE,
        connection_name: str = "agentbus",
        reconnect_interval: float = 1.0,
    ) -> None:
        self.url = url
        self._addresses = amqp_addresses(url)
        self._exchange_name = exchange
        self._connection_name = connection_name
        self._reconnect_interval = reconnect_interval
        self._connection: _FailoverConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumer_channels: list[AbstractChannel] = []
        self._get_channel: AbstractChannel | None = None
        self._info = broker_info(self._addresses[0])

    @property
    def exchange(self) -> str:
        return self._exchange_name

    @property
    def broker_info(self) -> BrokerInfo:
        """The node connected to now (the first address before connecting)."""
        connection = self._connection
        if connection is not None:
            node = connection.url
            if (node.host, node.port) != (self._info.address, self._info.port):
                self._info = broker_info(str(node))
        return self._info

    async def start(self) -> None:
        try:
            connection = _FailoverConnection(
                self._addresses,
                client_properties={"connection_name": self._connection_name},
                reconnect_interval=self._reconnect_interval,
            )
            # Per attempt: a node that takes the connection and never answers must not
            # keep the next address from being tried.
            await connection.connect(timeout=CONNECT_TIMEOUT)
            self._connection = connection
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {_safe(exc)}") from exc
        self._publish_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._publish_channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    def _require(self) -> tuple[AbstractRobustConnection, AbstractChannel, AbstractExchange]:
        if self._connection is None or self._publish_channel is None or self._exchange is None:
            raise BrokerUnavailable("the RabbitMQ transport is not started")
        return self._connection, self._publish_channel, self._exchange

    async def close(self) -> None:
        connection = self._connection
        self._connection = None
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def abort(self) -> None:
        # Closing the connection is what the broker sees of a crash too: every
        # unacked delivery on it goes back to its queue, marked redelivered.
        await self.close()

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        _, channel, exchange = self._require()
        for spec in queues:
            queue = await channel.declare_queue(
                spec.name,
                durable=not spec.transient,
                exclusive=spec.transient,
                auto_delete=spec.transient,
                arguments=describe(spec),
            )
            if spec.partition_group is not None:
                spread = await self._partition_exchange(channel, exchange, spec)
                await queue.bind(spread, routing_key=HASH_WEIGHT)
                continue
            for pattern in spec.bindings:
                await queue.bind(exchange, routing_key=pattern)

    async def _partition_exchange(
        self, channel: AbstractChannel, events: AbstractExchange, spec: QueueSpec
    ) -> AbstractExchange:
        """The group's consistent-hash exchange (plugin rabbitmq_consistent_hash_exchange),
        fed from the events exchange with the group's patterns."""
        try:
            spread = await channel.declare_exchange(
                f"{self._exchange_name}.{spec.partition_group}",
                "x-consistent-hash",
                durable=True,
                arguments={"hash-header": PARTITION_KEY_HEADER},
            )
        except aiormq.exceptions.ConnectionCommandInvalid as exc:
            raise BrokerUnavailable(
                "partitioned queues need the rabbitmq_consistent_hash_exchange plugin "
                f"(rabbitmq-plugins enable rabbitmq_consistent_hash_exchange): {exc}"
            ) from exc
        for pattern in spec.bindings:
            await spread.bind(events, routing_key=pattern)
        return spread

    async def publish(self, message: Message) -> None:
        _, _, exchange = self._require()
        await self._confirmed(exchange, message, message.routing_key)

    async def publish_many(self, messages: Sequence[Message]) -> None:
        # Every publish settles before the first failure is raised: left running, the
        # rest would go out after a reconnect, behind a caller's retry of the batch or
        # ahead of its gaps, and the queue would hold the batch out of order.
        for failure in await self.publish_each(messages):
            if failure is not None:
                raise failure

    async def publish_each(self, messages: Sequence[Message]) -> list[Exception | None]:
        _, _, exchange = self._require()
        results = await asyncio.gather(
            *(self._confirmed(exchange, m, m.routing_key) for m in messages),
            return_exceptions=True,
        )
        outcomes: list[Exception | None] = []
        for result in results:
            if isinstance(result, Exception):
                outcomes.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                outcomes.append(None)
        return outcomes

    async def send_to_queue(self, queue: str, message: Message) -> None:
        _, channel, _ = self._require()
        await self._confirmed(channel.default_exchange, message, queue)

    async def _confirmed(self, exchange: AbstractExchange, message: Message, key: str) -> None:
        try:
            await exchange.publish(_to_amqp(message), routing_key=key, mandatory=True)
        except PublishError as exc:
            raise Unroutable(f"no queue is bound for routing key {key!r}") from exc
        except DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused the message for {key!r}") from exc
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            raise BrokerUnavailable(f"publish failed: {_safe(exc)}") from exc

    async def consume(
        self,
        queue: str,
        handler: DeliveryHandler,
        *,
        prefetch: int,
        positions: PositionStore | None = None,
    ) -> Subscription:
        connection, _, _ = self._require()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        # Declared passively through this robust channel so it is restored on reconnect.
        amqp_queue = await channel.get_queue(queue, ensure=True)

        async def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            await handler(_RabbitDelivery(delivered, queue))

        tag = await amqp_queue.consume(on_message)  # type: ignore[arg-type]
        return _RabbitSubscription(amqp_queue, tag, channel)

    async def get(self, queue: str) -> Delivery | None:
        connection, _, _ = self._require()
        if self._get_channel is None or self._get_channel.is_closed:
            self._get_channel = await connection.channel()
        try:
            amqp_queue = await self._get_channel.get_queue(queue, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._get_channel = None  # the broker closed the channel with the error
            raise KeyError(queue) from exc
        underlay = await self._get_channel.get_underlay_channel()
        delivered = await underlay.basic_get(amqp_queue.name, no_ack=False)
        return None if delivered.delivery_tag is None else _RabbitDelivery(delivered, queue)

    async def depth(self, queue: str) -> int:
        connection, _, _ = self._require()
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise KeyError(queue) from exc
        finally:
            if not channel.is_closed:
                await channel.close()
        count = declared.declaration_result.message_count
        return int(count or 0)

    async def delete_queue(self, queue: str) -> None:
        _, channel, _ = self._require()
        await channel.queue_delete(queue)


async def connect_first(url: str, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """A plain connection to the first of `url`'s addresses that answers, for tools
    that connect, look and leave."""
    failure: BaseException | None = None
    for address in amqp_addresses(url):
        try:
            connection: aio_pika.abc.AbstractConnection = await aio_pika.connect(address, **kwargs)
            return connection
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
    assert failure is not None
    raise failure


def broker_info(url: str) -> BrokerInfo:
    """The broker an `amqp://` or `amqps://` URL names, without its credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return BrokerInfo(system="rabbitmq")
    default = 5671 if parts.scheme == "amqps" else 5672
    # aio-pika connects to localhost when the URL names no host.
    host = parts.hostname or "localhost"
    return BrokerInfo(system="rabbitmq", address=host, port=port or default)


def _safe(exc: BaseException) -> str:
    """An error text without credentials: URLs in it lose their user info."""
    return re.sub(r"(amqps?://)[^@/\s]*@", r"\1***@", str(exc) or type(exc).__name__)
