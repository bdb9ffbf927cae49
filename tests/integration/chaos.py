"""Exactly-once under faults: the shop's services in their own processes, SIGKILLed.

`Chaos.run` publishes a seeded stream (with re-sent duplicates) to inventory,
orders and payments, each an `agentbus run` subprocess, while it SIGKILLs them at
random moments and restarts them; then it waits for the system to settle and
compares `agentbus state inventory/orders --json` with an `Oracle`: a sequential
model of the contract's rules over the publish order, which imports nothing of
the services.

Why a sequential model is exact here: inventory applies its queue in publish
order, and every event of an order follows the order's causal chain. What is
left to timing is modelled as such and kept away from everything else:

- an order over the payment limit holds stock until its rejection comes back,
  at a moment nobody knows: such orders buy `LUX_SKU` only, stocked so deep that
  no decision on it depends on the hold;
- a cancellation sent right after its order races the payment: those orders buy
  `RACE_SKU` only (stocked as deep), either outcome is accepted, and the
  expected stock follows the outcome the service reports;
- a cancellation of an order that is rejected anyway may win or lose against the
  rejection: only the reason varies;
- a cancellation sent before its order (it overtakes it) rejects it for sure;
- a negative adjustment is sent only when it surely fits, or for `DEAD_SKU`,
  which never has stock, so that it surely is dead-lettered.

The oracle raises `AmbiguousStream` if the stream ever asks it for a decision
that timing could change, so the stream's design is checked, not assumed.

Queue names are fixed (`inventory`, `orders`, `payments`, ...): runs hold a file
lock, `exclusive_queues()`, so that two of them on one machine never share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import sqlalchemy as sa

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec, new_event
from agentbus.errors import BrokerUnavailable
from agentbus.store import open_database
from agentbus.transport.rabbitmq import RabbitTransport, connect_first
from events import (
    CATALOG,
    InventoryAdjusted,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    ProductUpserted,
    StockReceived,
)
from tests.integration.rabbit_cluster import CLUSTER_FAULTS, NODES, ClusterFaults, spread

SERVICES: tuple[str, ...] = ("inventory", "orders", "payments")
AGENT = "restock-agent"
SUGGESTION_TAP = "test.chaos.suggestions"
LIMIT = Decimal("5000.00")
LUX_SKU = "LUX-001"  # 2,600.00 a unit: one is authorized, two are over the limit
LUX_PRICE = Decimal("2600.00")
RACE_SKU = "CXL-001"  # orders cancelled right after they are placed
DEAD_SKU = "DEAD-001"  # never stocked: a negative adjustment of it is dead-lettered
DEEP_STOCK = 1_000_000
OPENING_STOCK = 30
PRICES = (Decimal("4.50"), Decimal("9.99"), Decimal("12.00"), Decimal("25.00"))
START = datetime(2026, 11, 1, tzinfo=UTC)
LOCK_PATH = Path(tempfile.gettempdir()) / "agentbus-shop-queues.lock"
CLUSTER_LOCK = Path(tempfile.gettempdir()) / "agentbus-cluster-shop-queues.lock"

Outcome = tuple[str, str | None]
CONFIRMED: Outcome = ("confirmed", None)
CANCELLED: Outcome = ("rejected", "cancelled")
OUT_OF_STOCK: Outcome = ("rejected", "out_of_stock")
PAYMENT_FAILED: Outcome = ("rejected", "payment_failed")


# -- the oracle ----------------------------------------------------------------------


class AmbiguousStream(ValueError):
    """The stream asks for a decision that the timing of the services could change."""


@dataclass
class Oracle:
    """The contract's rules, applied one event at a time in publish order.

    `solid[sku]` is on_hand once every outcome known so far has settled (confirmed
    orders committed); `maybe[sku]` is stock that may or may not be held when a
    later event is applied (a reservation released at an unknown moment, or one
    whose fate is a race). Available stock lies in [solid - maybe, solid]; every
    decision must come out the same anywhere in that range.
    """

    limit: Decimal = LIMIT
    solid: dict[str, int] = field(default_factory=dict)
    maybe: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, set[Outcome]] = field(default_factory=dict)
    lines: dict[str, dict[str, int]] = field(default_factory=dict)
    racy: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    dead_letters: int = 0

    def lowest_available(self, sku: str) -> int:
        return self.solid.get(sku, 0) - self.maybe.get(sku, 0)

    def apply(self, event: Event[Any]) -> None:
        if event.id in self.seen:
            return  # a duplicate: consumers treat an id they applied as done
        data = event.data
        if event.type == "product.upserted":
            self.solid.setdefault(data.sku, 0)
        elif event.type == "stock.received":
            self.solid[data.sku] = self.solid.get(data.sku, 0) + data.quantity
        elif event.type == "inventory.adjusted":
            if not self._adjust(data.sku, data.delta):
                self.dead_letters += 1
                return  # rejected, so not applied: a later copy gets a fresh try
        elif event.type == "order.created":
            self._created(data)
        elif event.type == "order.cancelled":
            self._cancelled(data.order_id)
        else:
            raise AmbiguousStream(f"the oracle does not model {event.type}")
        self.seen.add(event.id)

    def _adjust(self, sku: str, delta: int) -> bool:
        # on_hand never goes below zero; what is reserved leaves at confirmation.
        if self.lowest_available(sku) + delta >= 0:
            self.solid[sku] = self.solid.get(sku, 0) + delta
            return True
        if self.solid.get(sku, 0) + delta < 0:
            return False
        raise AmbiguousStream(f"adjusting {sku} by {delta:+d} depends on timing")

    def _created(self, data: OrderCreated) -> None:
        order_id = data.order_id
        if order_id in self.outcomes:
            return  # cancelled before it was placed: rejected for good, nothing held
        skus = [line.sku for line in data.lines]
        if len(set(skus)) != len(skus):
            raise AmbiguousStream("orders naming a SKU twice (invalid) are not modelled")
        wanted = {line.sku: line.quantity for line in data.lines}
        fits = all(q <= self.lowest_available(sku) for sku, q in wanted.items())
        short = any(q > self.solid.get(sku, 0) for sku, q in wanted.items())
        if fits == short:
            raise AmbiguousStream(f"whether {order_id} fits depends on timing")
        if short:  # all lines or none
            self.outcomes[order_id] = {OUT_OF_STOCK}
            return
        self.lines[order_id] = wanted
        total = sum((Decimal(line.quantity) * line.unit_price for line in data.lines), Decimal(0))
        if total > self.limit:
            # Reserved, then released when the rejection comes back: no net change,
            # but held until a moment nobody knows.
            self.outcomes[order_id] = {PAYMENT_FAILED}
            for sku, q in wanted.items():
                self.maybe[sku] = self.maybe.get(sku, 0) + q
            return
        self.outcomes[order_id] = {CONFIRMED}
        for sku, q in wanted.items():
            self.solid[sku] -= q

    def _cancelled(self, order_id: str) -> None:
        outcomes = self.outcomes.get(order_id)
        if outcomes is None:
            self.outcomes[order_id] = {CANCELLED}  # it overtook its order
        elif outcomes == {CONFIRMED}:
            # The cancellation races the payment: either may win.
            outcomes.add(CANCELLED)
            self.racy.add(order_id)
            for sku, q in self.lines[order_id].items():
                self.solid[sku] += q
                self.maybe[sku] = self.maybe.get(sku, 0) + q
        elif all(status == "rejected" for status, _ in outcomes):
            outcomes.add(CANCELLED)  # rejected either way; only the reason may vary

    def expected_inventory(self, actual_orders: dict[str, Any]) -> dict[str, dict[str, int]]:
        """Every SKU's final level; racy orders count as the services decided them."""
        on_hand = dict(self.solid)
        for order_id in self.racy:
            if (actual_orders.get(order_id) or {}).get("status") == "confirmed":
                for sku, q in self.lines[order_id].items():
                    on_hand[sku] -= q
        return {
            sku: {"on_hand": n, "reserved": 0, "available": n} for sku, n in sorted(on_hand.items())
        }


# -- the stream ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    events: list[Event[Any]]  # in publish order, duplicates included
    originals: int
    duplicates: int

    @property
    def orders(self) -> int:
        return len({e.data.order_id for e in self.events if e.type == "order.created"})


def build_stream(
    seed: int,
    events: int,
    *,
    skus: int = 20,
    duplicate_rate: float = 0.10,
    limit: Decimal = LIMIT,
) -> Stream:
    """Catalog and opening stock, then `events` (or a few more) mixed events, then
    about `duplicate_rate` of everything re-sent (same id, same body) later on."""
    rng = random.Random(seed)
    names = [f"SKU-{n:03d}" for n in range(skus)]
    originals: list[Event[Any]] = []
    model = Oracle(limit)  # what is safe to send next
    clock = START

    def add(data: Any, event_id: str) -> None:
        nonlocal clock
        clock += timedelta(seconds=1)
        event = new_event(data, source="/tests/chaos", id=event_id, time=clock)
        originals.append(event)
        model.apply(event)

    for sku in [*names, LUX_SKU, RACE_SKU, DEAD_SKU]:
        price = LUX_PRICE if sku == LUX_SKU else Decimal("9.99")
        add(
            ProductUpserted(
                sku=sku,
                name=f"Product {sku}",
                description="",
                category="chaos",
                unit_cost=(price / 2).quantize(Decimal("0.01")),
                unit_price=price,
                lead_time_days=3,
                reorder_point=5,
                max_stock=100,
                supplier="chaos supplies",
            ),
            f"product-{sku}",
        )
    for sku in [*names, LUX_SKU, RACE_SKU]:
        quantity = DEEP_STOCK if sku in (LUX_SKU, RACE_SKU) else OPENING_STOCK
        add(StockReceived(sku=sku, quantity=quantity), f"opening-{sku}")
    opening = len(originals)

    def order(order_id: str, lines: list[tuple[str, int, Decimal]]) -> OrderCreated:
        return OrderCreated(
            order_id=order_id,
            customer_id=f"C-{rng.randint(1, 500):03d}",
            lines=[OrderLine(sku=s, quantity=q, unit_price=p) for s, q, p in lines],
            currency="EUR",
        )

    cancels_due: list[tuple[int, str]] = []  # (when, order id) for racy cancellations
    rejected: list[str] = []
    n = 0
    while len(originals) - opening < events:
        n += 1
        for due in [c for c in cancels_due if c[0] <= n]:
            cancels_due.remove(due)
            add(OrderCancelled(order_id=due[1], reason="changed my mind"), f"cancel-{due[1]}")
        roll = rng.random()
        order_id = f"O-{n:06d}"
        if roll < 0.60:  # an ordinary order, now and then for more than is left
            lines = [
                (sku, rng.randint(8, 20) if rng.random() < 0.1 else rng.randint(1, 3), price)
                for sku in rng.sample(names, k=rng.choice((1, 1, 2, 3)))
                for price in [rng.choice(PRICES)]
            ]
            add(order(order_id, lines), f"created-{order_id}")
        elif roll < 0.66:  # luxury: one unit is authorized, two are over the limit
            add(order(order_id, [(LUX_SKU, rng.choice((1, 2)), LUX_PRICE)]), f"created-{order_id}")
        elif roll < 0.70:  # cancelled, and the cancellation races the payment
            add(
                order(order_id, [(RACE_SKU, rng.randint(1, 3), Decimal("9.99"))]),
                f"created-{order_id}",
            )
            cancels_due.append((n + rng.randint(0, 6), order_id))
        elif roll < 0.74:  # the cancellation overtakes its order
            add(OrderCancelled(order_id=order_id, reason="never mind"), f"cancel-{order_id}")
            add(order(order_id, [(rng.choice(names), 1, PRICES[0])]), f"created-{order_id}")
        elif roll < 0.76 and rejected:  # cancelling an order that is rejected anyway
            target = rng.choice(rejected[-50:])
            rejected.remove(target)
            add(OrderCancelled(order_id=target, reason="too slow"), f"cancel-{target}")
        elif roll < 0.94:
            add(StockReceived(sku=rng.choice(names), quantity=rng.randint(4, 16)), f"stock-{n}")
        else:
            sku = rng.choice(names)
            room = model.lowest_available(sku)
            if rng.random() < 0.2:
                sku, delta = DEAD_SKU, -1  # surely refused: dead-lettered
            elif room > 0 and rng.random() < 0.5:
                delta = -rng.randint(1, min(3, room))
            else:
                delta = rng.randint(1, 5)
            add(InventoryAdjusted(sku=sku, delta=delta, reason="stock count"), f"adjust-{n}")
        created = model.outcomes.get(order_id)
        if created and CANCELLED not in created and all(s == "rejected" for s, _ in created):
            rejected.append(order_id)
    for _, order_id in cancels_due:
        add(OrderCancelled(order_id=order_id, reason="changed my mind"), f"cancel-{order_id}")

    later: dict[int, list[Event[Any]]] = defaultdict(list)
    duplicates = 0
    for index, event in enumerate(originals):
        if rng.random() < duplicate_rate:
            later[rng.randint(index + 1, len(originals))].append(event)
            duplicates += 1
    published: list[Event[Any]] = []
    for index, event in enumerate(originals):
        published.extend(later.get(index, ()))
        published.append(event)
    published.extend(later.get(len(originals), ()))
    return Stream(published, len(originals), duplicates)


# -- processes and the broker ---------------------------------------------------------


class ServiceProcess:
    """One `agentbus run SERVICE` in a process group of its own."""

    def __init__(
        self,
        service: str,
        env: dict[str, str],
        label: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.args = tuple(args)
        self.label = label or service
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self._running = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = 120.0) -> float:
        """Spawn it and wait until it consumes; returns how long that took."""
        started = time.monotonic()
        self._running = asyncio.Event()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "run",
            self.service,
            *self.args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group
        )
        self._reader = asyncio.create_task(self._read(self.process, self._running))
        waiter = asyncio.create_task(self._running.wait())
        exited = asyncio.create_task(self.process.wait())
        try:
            await asyncio.wait({waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            exited.cancel()
        if not self._running.is_set():
            await self.stop(timeout=10)
            raise RuntimeError(f"{self.label} did not start in {timeout}s:\n{self.stderr()}")
        return time.monotonic() - started

    async def _read(self, process: asyncio.subprocess.Process, running: asyncio.Event) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            if text.startswith("running "):
                running.set()

    def stderr(self) -> str:
        return "\n".join(self.tail)

    async def kill(self) -> None:
        """SIGKILL the whole group: no drain, no shutdown hooks, nothing acked."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain and exit 0 is the contract), SIGKILL after `timeout`."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        return process.returncode


def is_shop_queue(name: str) -> bool:
    return any(name == s or name.startswith(f"{s}.") for s in (*SERVICES, AGENT))


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
        for service in (*SERVICES, AGENT):  # the hash exchanges of partitioned queues
            await channel.exchange_delete(f"{exchange}.{service}")


@contextlib.asynccontextmanager
async def exclusive_queues(timeout: float = 1800.0, path: Path = LOCK_PATH) -> AsyncIterator[None]:
    """Hold the machine-wide lock on the shop's fixed queue names (one per broker)."""
    handle = path.open("a")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout}s") from None
                await asyncio.sleep(0.5)
        yield
    finally:
        handle.close()  # closing releases the lock


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_engine(url: str) -> sa.Engine:
    rest = url.partition("://")[2]
    return sa.create_engine(f"postgresql+psycopg://{rest}", isolation_level="AUTOCOMMIT")


async def create_database(server_url: str, name: str) -> str:
    """A fresh PostgreSQL database on the server of `server_url`; returns its URL."""

    def create() -> None:
        engine = _admin_engine(server_url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    await asyncio.to_thread(create)
    return _with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    def drop() -> None:
        engine = _admin_engine(server_url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    await asyncio.to_thread(drop)


@dataclass
class Shop:
    """A clean place to run the shop: exchange, queues, SQLite dir or PostgreSQL DB."""

    amqp_url: str
    data_dir: Path
    postgres_url: str | None = None  # the server; each Shop gets a database of its own
    exchange: str = field(default_factory=lambda: f"agentbus.test.{uuid.uuid4().hex[:12]}")
    database_name: str = field(default_factory=lambda: f"agentbus_test_{uuid.uuid4().hex[:12]}")
    payment_limit: Decimal = LIMIT
    database_url: str | None = None
    processes: list[ServiceProcess] = field(default_factory=list)
    # On a cluster: its node names (for rabbitmqctl -n), and each service's AMQP_URL
    # starting at another node, so that every node carries some of the connections.
    nodes: tuple[str, ...] = ()

    @property
    def backend(self) -> str:
        return "postgres" if self.postgres_url else "sqlite"

    def env(self, service: str | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "AGENTBUS_")) and k != "DATABASE_URL"
        }
        env.update(
            AMQP_URL=self.amqp_url,
            AGENTBUS_EXCHANGE=self.exchange,
            AGENTBUS_DATA=str(self.data_dir),
            # Transient failures (an order's payment request overtaking it, a
            # database busy) retry fast here, and often enough to outlast a restart.
            AGENTBUS_RETRY_DELAY="0.2",
            AGENTBUS_RETRY_MAX_DELAY="2",
            AGENTBUS_MAX_ATTEMPTS="30",
            PAYMENT_LIMIT=str(self.payment_limit),
            OTEL_SDK_DISABLED="true",
            AGENTBUS_MODEL="policy",
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.nodes and service is not None:
            env["AMQP_URL"] = spread(self.amqp_url, (*SERVICES, AGENT).index(service))
        return env

    async def prepare(self) -> None:
        await clean_broker(self.amqp_url, self.exchange, self.nodes)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres_url:
            self.database_url = await create_database(self.postgres_url, self.database_name)

    async def dispose(self) -> None:
        await self.stop_all()
        with contextlib.suppress(Exception):
            await clean_broker(self.amqp_url, self.exchange, self.nodes)
        if self.postgres_url and self.database_url:
            await drop_database(self.postgres_url, self.database_name)

    async def spawn(self, service: str, label: str | None = None) -> ServiceProcess:
        process = ServiceProcess(service, self.env(service), label)
        self.processes.append(process)
        await process.start()
        return process

    async def stop_all(self) -> dict[str, int | None]:
        codes = await asyncio.gather(*(p.stop() for p in self.processes))
        return {p.label: code for p, code in zip(self.processes, codes, strict=True)}

    async def counts(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of each of the shop's queues."""
        names = [name for name in await queue_names(self.nodes) if is_shop_queue(name)]
        return await queue_counts(self.amqp_url, names)

    async def depth(self) -> int:
        """Messages waiting in main and retry queues (dead letters not counted;
        nor are deliveries in flight: `settle` also waits for states to be still)."""
        return sum(n for name, (n, _) in (await self.counts()).items() if not is_dlq(name))

    async def dead_letters(self) -> dict[str, int]:
        return {name: n for name, (n, _) in (await self.counts()).items() if is_dlq(name) and n}

    async def state(self, name: str) -> dict[str, Any]:
        """`agentbus state NAME --json`, as a user would read it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            "state",
            name,
            "--json",
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(f"agentbus state {name} failed: {err.decode()[-800:]}")
        value: dict[str, Any] = json.loads(out)
        return value

    @contextlib.asynccontextmanager
    async def publisher(self) -> AsyncIterator[Bus]:
        transport = RabbitTransport(self.amqp_url, exchange=self.exchange, connection_name="chaos")
        await transport.start()
        try:
            yield Bus(transport, EventCodec(CATALOG))
        finally:
            await transport.close()

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[StateReader]:
        reader = StateReader(self)
        try:
            yield reader
        finally:
            await reader.close()


class StateReader:
    """Reads the services' databases in this process: cheap enough to poll."""

    def __init__(self, shop: Shop) -> None:
        # The services' own views of their tables; the oracle never sees them.
        from consumers.inventory import read_state as inventory_state
        from consumers.orders import read_state as orders_state

        codec = EventCodec(CATALOG)
        self._views = {"inventory": inventory_state, "orders": orders_state}
        self._databases = {
            name: open_database(name, codec, url=shop.database_url, data_dir=shop.data_dir)
            for name in self._views
        }

    async def read(self, name: str) -> dict[str, Any]:
        view = self._views[name]

        def query(connection: sa.Connection) -> dict[str, Any]:
            try:
                return dict(view(connection))
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                return {}  # tables not there yet

        return await self._databases[name].read(query)

    async def close(self) -> None:
        for database in self._databases.values():
            await database.close()


async def settle(
    shop: Shop,
    orders: Collection[str],
    *,
    timeout: float,
    on_poll: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Wait until nothing is queued and both states stop changing.

    Stable for 3 s with every order decided, or for 20 s with some still pending
    (so that a lost order shows in the report instead of as a time-out).
    """
    started = time.monotonic()
    deadline = started + timeout
    last: tuple[dict[str, Any], dict[str, Any]] | None = None
    calm = 0
    pending = len(orders)
    async with shop.reader() as reader:
        while True:
            if on_poll is not None:
                await on_poll()
            depth = await shop.depth()
            snapshot = (await reader.read("inventory"), await reader.read("orders"))
            decided = snapshot[1]
            pending = sum(
                1 for o in orders if (decided.get(o) or {}).get("status") in (None, "pending")
            )
            calm = calm + 1 if depth == 0 and snapshot == last else 0
            last = snapshot
            if calm >= (3 if pending == 0 else 20):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    return {
        "settle_seconds": round(time.monotonic() - started, 1),
        "settled": calm > 0,
        "pending_when_settled": pending,
    }


# -- the chaos run ---------------------------------------------------------------------


@dataclass
class Recovery:
    service: str  # what was hit: a service, "rabbitmq", "connections" or "postgresql"
    killed_at: float  # seconds since the run started
    unfinished_orders: int  # published orders not yet confirmed or rejected, just before
    down_seconds: float  # the fault to the restart (or the end of the fault)
    restart_to_consuming_seconds: float  # then until every service consumes (or reads) again
    fault: str = "sigkill"


@dataclass
class Chaos:
    """Publish a seeded stream while faults hit the system; compare with the oracle.

    The stream goes out in segments, one more than there are faults; after each
    but the last the driver waits a random moment (`kill_after` seconds) while
    the services work, then injects the next fault of a shuffled plan: SIGKILL
    of a service (every service in turn) and its restart, the broker closing
    every connection, a restart of the broker application, a restart of
    PostgreSQL. Every fault lands on work in flight. With `agent`, the restock
    agent runs too, and every suggestion on the wire is tapped: a trigger must
    never yield two different suggestions.
    """

    amqp_url: str
    data_dir: Path
    postgres_url: str | None = None
    seed: int = 7
    # Short: services drain a segment within a second or so on an idle machine, and a
    # fault after that lands on no saga in flight (seen once, 0 unfinished at 5 faults).
    kill_after: tuple[float, float] = (0.05, 0.6)
    agent: bool = False
    connection_drops: int = 0
    broker_restarts: int = 0
    database_restarts: int = 0
    # On a cluster (amqp_url lists its nodes): kills of the inventory queue's leader node
    # and clean stops of another node, each node back a few seconds later.
    cluster: ClusterFaults | None = None
    leader_kills: int = 0
    node_stops: int = 0
    recoveries: list[Recovery] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)

    @property
    def services(self) -> tuple[str, ...]:
        return (*SERVICES, AGENT) if self.agent else SERVICES

    async def run(
        self,
        events: int,
        kills: int,
        *,
        duplicate_rate: float = 0.10,
        settle_timeout: float = 600.0,
    ) -> dict[str, Any]:
        stream = build_stream(self.seed, events, duplicate_rate=duplicate_rate)
        oracle = Oracle(LIMIT)
        for event in stream.events:
            oracle.apply(event)
        shop = Shop(self.amqp_url, self.data_dir, self.postgres_url)
        if self.cluster is not None:
            shop.nodes = NODES
        suggestions: dict[str, set[str]] = {}
        async with exclusive_queues(path=CLUSTER_LOCK if self.cluster else LOCK_PATH):
            try:
                await shop.prepare()
                if self.agent:
                    await _tap_suggestions(shop)
                spawned = await asyncio.gather(*(shop.spawn(s) for s in self.services))
                processes = dict(zip(self.services, spawned, strict=True))
                started = time.monotonic()
                await self._storm(shop, processes, stream.events, self._plan(kills), started)
                storm_done = time.monotonic()
                if self.cluster is not None:
                    await self.cluster.whole()

                async def watch() -> None:
                    for process in processes.values():
                        if not process.alive:  # died on its own: note it, bring it back
                            self.unexpected_exits.append(f"{process.label}:\n{process.stderr()}")
                            await process.start()

                settling = await settle(
                    shop, oracle.outcomes, timeout=settle_timeout, on_poll=watch
                )
                seconds = time.monotonic() - started
                inventory, orders = await asyncio.gather(
                    shop.state("inventory"), shop.state("orders")
                )
                dead_letters = await shop.dead_letters()
                if self.agent:
                    suggestions = await _drain_suggestions(shop)
                exit_codes = await shop.stop_all()
            finally:
                if self.cluster is not None:
                    await self.cluster.whole()
                await shop.dispose()
                if self.agent:
                    with contextlib.suppress(Exception):
                        await _delete_queue(self.amqp_url, SUGGESTION_TAP)
        report = compare(oracle, inventory, orders)
        statuses = Counter(
            f"{v['status']}:{v['reason']}" if v["reason"] else v["status"] for v in orders.values()
        )
        restart = [r.restart_to_consuming_seconds for r in self.recoveries]
        return {
            "backend": shop.backend,
            "seed": self.seed,
            "events": len(stream.events),
            "unique_events": stream.originals,
            "duplicates": stream.duplicates,
            "orders": len(oracle.outcomes),
            "outcomes": dict(sorted(statuses.items())),
            "kills": sum(1 for r in self.recoveries if r.fault == "sigkill"),
            "killed": dict(Counter(r.service for r in self.recoveries if r.fault == "sigkill")),
            "fault_counts": dict(Counter(r.fault for r in self.recoveries)),
            "faults": [
                {
                    "fault": r.fault,
                    "target": r.service,
                    "at_second": round(r.killed_at, 1),
                    "unfinished_orders_at_fault": r.unfinished_orders,
                    "down_seconds": round(r.down_seconds, 2),
                    "recovery_seconds": round(r.restart_to_consuming_seconds, 2),
                }
                for r in self.recoveries
            ],
            "recovery_seconds": {
                "max": round(max(restart, default=0.0), 2),
                "mean": round(sum(restart) / len(restart), 2) if restart else 0.0,
            },
            **report,
            "nodes_hit": self.cluster.hits if self.cluster else [],
            "suggestion_triggers": len(suggestions),
            "duplicate_suggestions": sum(len(ids) - 1 for ids in suggestions.values()),
            "dead_letters": dead_letters,
            "expected_dead_letters_at_least": {"inventory.dlq": oracle.dead_letters},
            "unexpected_exits": self.unexpected_exits,
            "exit_codes_on_sigterm": exit_codes,
            **settling,
            "storm_seconds": round(storm_done - started, 1),
            "seconds": round(seconds, 1),
            "orders_per_second": round(len(oracle.outcomes) / seconds, 1),
            "events_per_second": round(len(stream.events) / seconds, 1),
        }

    def _plan(self, kills: int) -> list[str]:
        rng = random.Random(self.seed + 1)
        victims = [self.services[i % len(self.services)] for i in range(kills)]
        rng.shuffle(victims)  # every service gets its share, in a random order
        plan = [
            *victims,
            *["connections"] * self.connection_drops,
            *["rabbitmq"] * self.broker_restarts,
            *["postgresql"] * (self.database_restarts if self.postgres_url else 0),
            *["leader_kill"] * (self.leader_kills if self.cluster else 0),
            *["node_stop"] * (self.node_stops if self.cluster else 0),
        ]
        rng.shuffle(plan)
        return plan

    async def _storm(
        self,
        shop: Shop,
        processes: dict[str, ServiceProcess],
        events: Sequence[Event[Any]],
        plan: list[str],
        started: float,
    ) -> None:
        rng = random.Random(self.seed + 2)
        segments = len(plan) + 1
        bounds = [round(i * len(events) / segments) for i in range(segments + 1)]
        placed: list[str] = []
        async with shop.publisher() as bus, shop.reader() as reader:
            for segment in range(segments):
                chunk = events[bounds[segment] : bounds[segment + 1]]
                for start in range(0, len(chunk), 200):
                    await publish_surely(bus, chunk[start : start + 200])
                placed += [e.data.order_id for e in chunk if e.type == "order.created"]
                if segment == len(plan):
                    break
                await asyncio.sleep(rng.uniform(*self.kill_after))
                decided = await _read_surely(reader, "orders")
                unfinished = sum(
                    1
                    for o in set(placed)
                    if (decided.get(o) or {}).get("status") in (None, "pending")
                )
                target = plan[segment]
                hit = time.monotonic()
                if target in processes:
                    victim = processes[target]
                    await victim.kill()
                    await asyncio.sleep(rng.uniform(0.0, 0.5))
                    restarted = time.monotonic()
                    consuming = await victim.start()
                    recovery = Recovery(
                        target, hit - started, unfinished, restarted - hit, consuming
                    )
                else:
                    if self.cluster is not None and target in CLUSTER_FAULTS:
                        down = await self.cluster.inject(target)
                    else:
                        down = await _inject(target)
                    back = time.monotonic()
                    if target == "postgresql":
                        await _read_surely(reader, "orders")
                    else:
                        await _until_consuming(shop, self.services)
                    recovery = Recovery(
                        target,
                        hit - started,
                        unfinished,
                        down,
                        time.monotonic() - back,
                        fault=FAULT_NAMES[target],
                    )
                self.recoveries.append(recovery)


FAULT_NAMES = {
    "connections": "connections_closed",
    "rabbitmq": "broker_restart",
    "postgresql": "database_restart",
    "leader_kill": "leader_node_killed",
    "node_stop": "node_stopped",
}


async def _command(*args: str, timeout: float = 180) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {(out + err).decode()[-500:]}")


async def _inject(fault: str) -> float:
    """Cause the fault and end it; returns how long the broken part was down."""
    began = time.monotonic()
    if fault == "connections":
        await _command("rabbitmqctl", "close_all_connections", "chaos: connections closed")
    elif fault == "rabbitmq":
        await _command("rabbitmqctl", "stop_app")
        await _command("rabbitmqctl", "start_app")
        await _command("rabbitmqctl", "await_startup")
    elif fault == "postgresql":
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        await _command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart")
    else:
        raise ValueError(f"unknown fault {fault!r}")
    return time.monotonic() - began


async def _until_consuming(shop: Shop, services: Sequence[str], timeout: float = 120) -> None:
    """Until every service's main queue has a consumer again."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # the broker may still be coming back
            counts = await queue_counts(shop.amqp_url, list(services))
            if all(counts.get(name, (0, 0))[1] > 0 for name in services):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"services not consuming {timeout}s after the fault")
        await asyncio.sleep(0.2)


async def publish_surely(bus: Bus, events: Sequence[Event[Any]], timeout: float = 180) -> None:
    """Publish until confirmed; a repeat carries the same ids, so it is a duplicate."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await bus.publish_many(events)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _read_surely(reader: StateReader, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await reader.read(name)
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def _tap_arguments(shop: Shop) -> dict[str, Any] | None:
    # On a cluster a classic queue lives on one node, and would miss what comes while
    # that node is down.
    return {"x-queue-type": "quorum"} if shop.nodes else None


async def _tap_suggestions(shop: Shop) -> None:
    connection = await connect_first(shop.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            shop.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            SUGGESTION_TAP, durable=True, arguments=_tap_arguments(shop)
        )
        await queue.bind(exchange, routing_key="restock.recommended")


async def _drain_suggestions(shop: Shop) -> dict[str, set[str]]:
    """Every suggestion that crossed the broker: trigger id -> suggestion event ids."""
    found: dict[str, set[str]] = {}
    connection = await connect_first(shop.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            SUGGESTION_TAP, durable=True, arguments=_tap_arguments(shop)
        )
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            body = json.loads(message.body)
            trigger = str(body["data"]["trigger_event_id"])
            found.setdefault(trigger, set()).add(str(body["id"]))
    return found


async def _delete_queue(amqp_url: str, name: str) -> None:
    connection = await connect_first(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


def compare(oracle: Oracle, inventory: dict[str, Any], orders: dict[str, Any]) -> dict[str, Any]:
    """Lost orders, wrong outcomes and wrong stock levels, with a few examples."""
    lost = sorted(
        o for o in oracle.outcomes if (orders.get(o) or {}).get("status") in (None, "pending")
    )
    wrong_orders = {
        o: {"got": orders[o], "expected": sorted(map(list, oracle.outcomes[o]), key=str)}
        for o in sorted(oracle.outcomes)
        if o not in lost and (orders[o]["status"], orders[o]["reason"]) not in oracle.outcomes[o]
    }
    unknown_orders = sorted(set(orders) - set(oracle.outcomes))
    expected = oracle.expected_inventory(orders)
    wrong_stock = {
        sku: {"got": inventory.get(sku), "expected": expected.get(sku)}
        for sku in sorted(set(expected) | set(inventory))
        if inventory.get(sku) != expected.get(sku)
    }
    return {
        "lost": len(lost),
        "wrong_outcomes": len(wrong_orders),
        "unknown_orders": len(unknown_orders),
        "double_applied": len(wrong_stock),
        "negative_on_hand": sum(1 for v in inventory.values() if v["on_hand"] < 0),
        "racy_orders": len(oracle.racy),
        "examples": {
            "lost": lost[:5],
            "wrong_outcomes": dict(list(wrong_orders.items())[:5]),
            "wrong_stock": dict(list(wrong_stock.items())[:5]),
            "unknown_orders": unknown_orders[:5],
        },
    }
