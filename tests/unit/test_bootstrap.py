"""The composition root: which broker the settings choose, that every entry point builds
its system there, and that building and running one leaves the process as it was."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from agentbus import host as host_module
from agentbus.app import Application
from agentbus.bootstrap import NO_BROKER, System, bootstrap, transport_for, with_amqp_url
from agentbus.cli.common import system_of
from agentbus.envelope import Event
from agentbus.errors import ConfigurationError
from agentbus.service import Context, Service, ServiceEnv
from agentbus.settings import Settings
from agentbus.testing import Harness
from agentbus.transport.base import Delivery, QueueSpec
from agentbus.transport.kafka import KafkaTransport
from agentbus.transport.memory import InMemoryBroker, MemoryTransport
from agentbus.transport.rabbitmq import RabbitTransport
from tests.contract.catalog import CATALOG, sample

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("agentbus", "events", "tools", "agents", "consumers", "evals")
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
KAFKA = "127.0.0.1:9092"


def settings(**variables: str) -> Settings:
    return Settings.from_env(variables)


@pytest.mark.parametrize(
    ("variables", "chosen"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": KAFKA, "AMQP_URL": AMQP}, KafkaTransport),
        ({"KAFKA_BOOTSTRAP_SERVERS": KAFKA}, KafkaTransport),
        ({"AMQP_URL": AMQP}, RabbitTransport),
        ({}, MemoryTransport),
    ],
    ids=["kafka-over-amqp", "kafka", "amqp", "in-process"],
)
def test_the_settings_choose_kafka_then_rabbitmq_then_the_in_process_broker(
    variables: dict[str, str], chosen: type[Any]
) -> None:
    system = bootstrap(settings(**variables), CATALOG, [], name="agentbus run x")
    assert type(system.transport) is chosen
    assert system.bus.transport is system.transport
    assert system.host.bus is system.bus


def test_kafka_topics_are_made_for_the_catalog_and_the_client_named_after_the_process() -> None:
    system = bootstrap(
        settings(KAFKA_BOOTSTRAP_SERVERS=KAFKA, AGENTBUS_KAFKA_PREFIX="shop1."),
        CATALOG,
        [],
        name="agentbus run all",
    )
    assert isinstance(system.transport, KafkaTransport)
    assert system.transport.prefix == "shop1."
    # Its topics are made before anything publishes, and the broker's logs name the process.
    assert set(system.transport._event_types) == set(CATALOG)
    assert system.transport._client_id == "agentbus-run-all"


def test_the_in_process_broker_uses_the_settings_exchange() -> None:
    transport = transport_for(settings(AGENTBUS_EXCHANGE="shop.events"), name="x")
    assert transport.exchange == "shop.events"


def test_a_process_that_needs_a_broker_is_refused_without_one() -> None:
    with pytest.raises(ConfigurationError) as refused:
        transport_for(settings(), name="agentbus run x", embedded=False)
    assert str(refused.value) == NO_BROKER
    app = Application(name="t", catalog=CATALOG)
    with pytest.raises(typer.Exit):
        system_of(settings(), None, app, name="agentbus run x")


def test_an_explicit_amqp_url_wins_over_kafka_and_the_variable() -> None:
    other = "amqp://guest:guest@127.0.0.2:5672/"
    both = settings(KAFKA_BOOTSTRAP_SERVERS=KAFKA, AMQP_URL=AMQP)
    chosen = with_amqp_url(both, other)
    assert (chosen.amqp_url, chosen.kafka_bootstrap_servers) == (other, None)
    assert isinstance(transport_for(chosen, name="x", embedded=False), RabbitTransport)
    assert with_amqp_url(both, None) is both


def test_a_given_transport_is_used_as_it_is() -> None:
    given = InMemoryBroker().connect()
    system = bootstrap(settings(AMQP_URL=AMQP), CATALOG, [], transport=given)
    assert system.transport is given


async def test_observers_see_what_services_publish_as_they_start(tmp_path: Path) -> None:
    greeter = Service("greeter", publishes=["order.created"])

    @greeter.on_startup
    async def greet(env: ServiceEnv) -> None:
        await env.bus.publish_many([sample("order.created", "k", 1)])

    @greeter.handles("inventory.low")
    async def ignore(event: Event[Any], ctx: Context) -> None:
        pass

    config = Settings.from_env({"AGENTBUS_DATA": str(tmp_path)})
    system = bootstrap(config, CATALOG, [greeter])
    seen: list[str] = []

    async def tap(delivery: Delivery) -> None:
        seen.append(delivery.message.type or "?")
        await delivery.ack()

    system.observe(QueueSpec("tap", bindings=("#",), transient=True), tap, prefetch=10)
    async with system as running:
        assert running.host.running
        await running.host.settle(interval=0.01, stable=2, timeout=10)
    assert seen == ["order.created"]
    assert not system.host.running


@pytest.fixture
def collector_as_found() -> Iterator[None]:
    """The collector's policy restored, and `tune_gc_once` ready to act again."""
    threshold, tuned = gc.get_threshold(), host_module._tuned
    host_module._tuned = False
    yield
    host_module._tuned = tuned
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_as_found")
async def test_the_harness_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    quiet = Service("quiet")

    @quiet.handles("order.created")
    async def handle(event: Event[Any], ctx: Context) -> None:
        pass

    async with Harness(tmp_path, [quiet], catalog=CATALOG) as shop:
        assert isinstance(shop.system, System)
        await shop.publish([sample("order.created", "k", 1)])
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen
    assert host_module._tuned is False


def shipped_files() -> Iterator[tuple[str, ast.Module]]:
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def calls_of(tree: ast.Module, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in names:
                found.append(f"{name}() on line {node.lineno}")
    return found


def test_transport_bus_and_host_are_built_only_by_the_bootstrap() -> None:
    built = {"Host", "Bus", "InMemoryBroker", "RabbitTransport", "KafkaTransport"}
    elsewhere = {
        path: calls
        for path, tree in shipped_files()
        if path != "agentbus/bootstrap.py" and (calls := calls_of(tree, built))
    }
    assert elsewhere == {}


@pytest.mark.parametrize(
    "path",
    [
        "agentbus/cli/common.py",
        "agentbus/testing.py",
        "agentbus/rebuild.py",
        "evals/replay.py",
        "evals/demo.py",
    ],
)
def test_the_entry_points_build_through_the_bootstrap(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    assert calls_of(tree, {"bootstrap"}), f"{path} builds no system with bootstrap()"


def tunes_the_process(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "tune_gc_once":
            return True
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "gc"
            and func.attr not in ("collect", "get_threshold", "get_freeze_count")
        ):
            return True
    return False


def test_process_wide_tuning_happens_only_in_the_commands_entry_points() -> None:
    where = {path for path, tree in shipped_files() if tunes_the_process(tree)}
    # `agentbus run` once its services are up, `agentbus eval` (a long run in a process
    # of its own) before it replays, and the eval's worker processes as they start (a
    # caller's own process is never a worker); `host.py` defines the tuning.
    assert where == {
        "agentbus/cli/run_commands.py",
        "agentbus/cli/eval_commands.py",
        "evals/workers.py",
        "agentbus/host.py",
    }
    worker = ast.parse((ROOT / "evals/workers.py").read_text())
    tuning = [
        node.name
        for node in ast.walk(worker)
        if isinstance(node, ast.FunctionDef) and tunes_the_process(node)
    ]
    assert tuning == ["_started"], "only a worker process tunes itself as it starts"
