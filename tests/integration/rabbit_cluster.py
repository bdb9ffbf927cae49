"""The development RabbitMQ cluster (`deploy/dev/services cluster up`) and its faults.

Three nodes, agentbus-c1..c3@localhost on AMQP ports 5681-5683, run as the rabbitmq
user with its Erlang cookie, so `rabbitmqctl -n NODE` reaches each of them. The chaos
run (tests/integration/chaos.py) takes `ClusterFaults` for two faults of its plan:

- `leader_kill`: the node that leads the inventory queue is SIGKILLed (its beam.smp,
  from the node's pid file), and started again a few seconds later;
- `node_stop`: another node stops its application cleanly (`rabbitmqctl stop_app`:
  its clients are closed, its queue members leave), and starts it again later.

One node is down at a time: a fault waits for the previous one's node to be back, so
that every quorum queue keeps its majority.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from agentbus.transport.amqp_addresses import amqp_addresses

ROOT = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("AGENTBUS_RABBITMQ_CLUSTER_HOME", "/tmp/agentbus-rabbitmq-cluster"))
NODES = tuple(f"agentbus-c{n}@localhost" for n in (1, 2, 3))
PORTS = (5681, 5682, 5683)
CLUSTER_URL = "amqp://guest:guest@127.0.0.1:5681/,127.0.0.1:5682,127.0.0.1:5683"
CLUSTER_FAULTS = ("leader_kill", "node_stop")
UP = "deploy/dev/services cluster up"


def spread(url: str, turn: int) -> str:
    """The same addresses, starting at another one: each service on a node of its own."""
    addresses = amqp_addresses(url)
    turn %= len(addresses)
    return ",".join(addresses[turn:] + addresses[:turn])


async def ctl(node: str, *args: str, timeout: float = 120) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-n",
        node,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {err.decode()[-400:]}")
    return out.decode()


async def on_any_node(*args: str, nodes: tuple[str, ...] = NODES) -> str:
    """A rabbitmqctl command answered by the first node that runs."""
    failure: Exception | None = None
    for node in nodes:
        try:
            return await ctl(node, *args, timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            failure = exc
    raise RuntimeError(f"no node of the cluster answers: {failure}")


async def leaders(nodes: tuple[str, ...] = NODES) -> dict[str, str]:
    """Queue name -> the node that leads it (quorum queues; a classic queue's home)."""
    out = await on_any_node(
        "list_queues", "name", "leader", "--quiet", "--no-table-headers", nodes=nodes
    )
    found: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[0]] = parts[1]
    return found


async def online_members(queue: str) -> int:
    """How many of a quorum queue's members run: a kill that leaves fewer than a majority
    of them stops the queue until a node comes back."""
    out = await on_any_node("list_queues", "name", "online", "--quiet", "--no-table-headers")
    for line in out.splitlines():
        name, _, online = line.partition("\t")
        if name == queue:
            return online.count("@")
    return 0


def beam_pid(node: str) -> int:
    """The node's Erlang VM, as its pid file names it."""
    number = node.split("@")[0].removeprefix("agentbus-c")
    return int((HOME / f"c{number}" / "beam.pid").read_text().strip())


async def bring_up() -> str:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "deploy/dev/services"),
        "cluster",
        "up",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    if process.returncode != 0:
        raise RuntimeError(f"{UP} failed: {out.decode()[-800:]}")
    return out.decode()


@dataclass
class ClusterFaults:
    """Faults on the cluster's nodes for the chaos run; `hits` says what each one did."""

    queue: str = "inventory"  # the queue whose leader's node is killed
    back_after: float = 3.0  # seconds a hit node stays down while the stream goes on
    hits: list[dict[str, object]] = field(default_factory=list)
    _returns: list[asyncio.Task[None]] = field(default_factory=list)
    _last: str | None = None

    async def inject(self, fault: str) -> float:
        """Cause the fault; the node comes back in the background. Returns the seconds the
        fault itself took (the node is still down when this returns)."""
        await self.whole()
        began = time.monotonic()
        before = await leaders()
        hit: dict[str, object] = {"fault": fault, "at": time.strftime("%H:%M:%S")}
        if fault == "leader_kill":
            node = before[self.queue]
            os.kill(beam_pid(node), signal.SIGKILL)
            back = self._later(hit, self._restart(node))
        elif fault == "node_stop":
            node = next(n for n in NODES if n not in (self._last, before[self.queue]))
            await ctl(node, "stop_app")
            back = self._later(hit, ctl(node, "start_app"))
        else:
            raise ValueError(f"unknown cluster fault {fault!r}")
        hit["node"] = node
        hit["led"] = sorted(q for q, n in before.items() if n == node)
        self._last = node
        self._returns.append(back)
        self.hits.append(hit)
        return time.monotonic() - began

    def _later(self, hit: dict[str, object], action: Awaitable[object]) -> asyncio.Task[None]:
        async def run() -> None:
            await asyncio.sleep(self.back_after)
            began = time.monotonic()
            await action
            hit["back_seconds"] = round(time.monotonic() - began, 1)

        return asyncio.create_task(run())

    async def _restart(self, node: str) -> None:
        await bring_up()  # starts only what is down; the node rejoins from its own data

    async def whole(self) -> None:
        """Until every node hit so far is back."""
        returns, self._returns = self._returns, []
        for task in returns:
            await task

    async def abandon(self) -> None:
        for task in self._returns:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
