"""docker-compose.yml, checked by reading it (no Docker engine here): every service
runs a real `agentbus run` service, sets only variables something reads, reports
health on the port it serves, and sends traces to the Jaeger in the file. The shop runs
on RabbitMQ by default and, in the `kafka` profile, a second time on a Kafka broker."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from opentelemetry.sdk import environment_variables as otel_variables

from agentbus.retry import RetryPolicy, partition_queue, topology
from agentbus.transport.base import EVENTS_EXCHANGE
from consumers.app import app

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentbus", "events", "consumers", "agents", "tools", "evals")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


SHOPS = ("rabbitmq", "kafka")


def ours(compose: dict[str, Any], shop: str = "rabbitmq") -> dict[str, dict[str, Any]]:
    """The application's services of one shop: the default one (no profile) on
    RabbitMQ, or the `kafka` profile's."""
    wanted = [] if shop == "rabbitmq" else [shop]
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("image", "").startswith("agentbus") and spec.get("profiles", []) == wanted
    }


def every_one_of_ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("image", "").startswith("agentbus")
    }


BROKER_VARIABLE = {"rabbitmq": "AMQP_URL", "kafka": "KAFKA_BOOTSTRAP_SERVERS"}


def names_the_code_reads() -> set[str]:
    """Every string constant in the packages that looks like an environment variable."""
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                value = node.value if isinstance(node, ast.Constant) else None
                if isinstance(value, str) and ENV_NAME.match(value):
                    found.add(value)
    return found


def otel_names() -> set[str]:
    return {
        value
        for value in vars(otel_variables).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    }


@pytest.mark.parametrize("shop", SHOPS)
def test_every_application_service_runs_and_runs_a_real_service(
    compose: dict[str, Any], shop: str
) -> None:
    services = ours(compose, shop)
    commands = {name: spec["command"] for name, spec in services.items()}
    for name, command in commands.items():
        assert command[0] == "run", name
        assert set(command[1:]) <= set(app.services), (name, command)
    deployed = {service for command in commands.values() for service in command[1:]}
    assert deployed == set(app.services), "every service of the application is deployed"


@pytest.mark.parametrize("shop", SHOPS)
def test_every_variable_set_is_one_that_is_read(compose: dict[str, Any], shop: str) -> None:
    readable = names_the_code_reads() | otel_names()
    for name, spec in ours(compose, shop).items():
        unknown = set(spec["environment"]) - readable
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
        environment = spec["environment"]
        for variable in (BROKER_VARIABLE[shop], "DATABASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            assert variable in environment, (name, variable)
        assert environment["OTEL_SERVICE_NAME"] == name
        assert environment["OTEL_TRACES_EXPORTER"] == "otlp"


@pytest.mark.parametrize("shop", SHOPS)
def test_urls_point_at_services_of_the_file(compose: dict[str, Any], shop: str) -> None:
    services = compose["services"]
    for name, spec in ours(compose, shop).items():
        environment = spec["environment"]
        urls = ["DATABASE_URL", "QDRANT_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        if shop == "rabbitmq":
            urls.append("AMQP_URL")
        for variable in urls:
            host = urlparse(environment[variable]).hostname
            assert host in services, (name, variable, host)
        otlp = urlparse(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert otlp.hostname == "jaeger"
        assert otlp.port == 4318, "OTLP over HTTP, the protocol installed"
        for dependency in spec["depends_on"]:
            assert dependency in services, (name, dependency)
    assert services["jaeger"]["image"].startswith("jaegertracing/")


def test_health_checks_ask_the_port_the_service_serves(compose: dict[str, Any]) -> None:
    for name, spec in every_one_of_ours(compose).items():
        port = spec["environment"]["AGENTBUS_METRICS_PORT"]
        probe = " ".join(spec["healthcheck"]["test"])
        assert f":{port}/readyz" in probe, name
    scraped = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {
        t
        for job in scraped["scrape_configs"]
        for c in job.get("static_configs", [])
        for t in c["targets"]
    } | {
        f"{name}:{sd['port']}"
        for job in scraped["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    expected = {
        f"{name}:{spec['environment']['AGENTBUS_METRICS_PORT']}"
        for name, spec in every_one_of_ours(compose).items()
    }
    assert targets == expected


def test_the_image_holds_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages <= copied
    assert "prompts" in copied, "agents load their prompt files at run time"
    assert 'ENTRYPOINT ["agentbus"]' in dockerfile


def test_each_service_connects_as_its_own_least_privileged_user(compose: dict[str, Any]) -> None:
    script = (ROOT / "deploy" / "rabbitmq-users.sh").read_text()
    [listed] = re.findall(r"^for service in ([a-z -]+); do$", script, re.MULTILINE)
    assert set(listed.split()) == set(app.services), "a user for every service, and no other"
    passwords = compose["services"]["rabbitmq-users"]["environment"]
    for name, spec in ours(compose).items():
        url = urlparse(spec["environment"]["AMQP_URL"])
        assert url.username == name, f"{name} connects as {url.username}"
        assert name.upper().replace("-", "_") + "_AMQP_PASSWORD" in passwords
        ready = spec["depends_on"]["rabbitmq-users"]["condition"]
        assert ready == "service_completed_successfully", name
    assert "guest" not in yaml.safe_dump(ours(compose)), "no service uses the broker's admin"


def test_each_users_permissions_cover_its_queues_and_nothing_of_the_others(
    tmp_path: Path,
) -> None:
    """Runs deploy/rabbitmq-users.sh with a stand-in `curl` that keeps what it was
    sent, then checks the permission patterns against every queue and exchange
    a service declares, partitioned or not (the names are the code's own)."""
    fake = tmp_path / "curl"
    fake.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ "$1" = "-d" ]; then shift; '
        'printf \'%s\\n\' "$1" >> "$SENT"; fi\n  shift\ndone\n'
    )
    fake.chmod(0o755)
    sent = tmp_path / "sent.jsonl"
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "SENT": str(sent),
        **{f"{name.upper().replace('-', '_')}_AMQP_PASSWORD": "pw" for name in app.services},
    }
    subprocess.run(
        ["sh", str(ROOT / "deploy" / "rabbitmq-users.sh")], env=env, check=True, capture_output=True
    )
    grants = [json.loads(line) for line in sent.read_text().splitlines()]
    permissions = [g for g in grants if "configure" in g]
    assert len(permissions) == len(app.services)
    by_service = dict(zip(list(app.services), permissions, strict=True))
    for name, granted in by_service.items():
        [service] = app.resolve([name])
        queues = {
            spec.name
            for partition_group in (None, service.queue)
            for queue in (
                [service.queue]
                if partition_group is None
                else [partition_queue(service.queue, p) for p in range(3)]
            )
            for spec in topology(
                queue, service.subscribes, RetryPolicy(), partition_group=partition_group
            )
        }
        exchanges = {EVENTS_EXCHANGE, f"{EVENTS_EXCHANGE}.{service.queue}"}
        for kind in ("configure", "read"):
            for target in queues | exchanges:
                assert re.fullmatch(granted[kind], target), (name, kind, target)
        for target in {*queues, *exchanges, "amq.default"}:
            assert re.fullmatch(granted["write"], target), (name, "write", target)
        for other in set(by_service) - {name}:
            assert not re.fullmatch(granted["configure"], other), (name, other)
            assert not re.fullmatch(granted["read"], f"{other}.dlq"), (name, other)


def test_partitioned_services_have_the_broker_plugin_and_are_scraped_per_replica(
    compose: dict[str, Any],
) -> None:
    partitioned = {
        name
        for name, spec in ours(compose).items()
        if int(spec["environment"].get("AGENTBUS_PARTITIONS", "1")) > 1
    }
    assert partitioned, "the stack shows scaling out"
    for name in partitioned:
        assert compose["services"][name]["deploy"]["replicas"] > 1, name
    [mount] = compose["services"]["rabbitmq"]["volumes"]
    source, target, _ = mount.split(":")
    assert target == "/etc/rabbitmq/enabled_plugins"
    plugins = (ROOT / source).read_text()
    for plugin in ("rabbitmq_consistent_hash_exchange", "rabbitmq_management"):
        assert plugin in plugins
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    resolved = {
        name
        for job in scrape["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert partitioned <= resolved, "each replica is scraped, not one of them"


def test_the_kafka_profile_runs_the_shop_on_its_own_kraft_broker_and_stores(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    kafka_shop, rabbit_shop = ours(compose, "kafka"), ours(compose)
    assert set(every_one_of_ours(compose)) == set(kafka_shop) | set(rabbit_shop)
    broker = services["kafka"]
    assert broker["image"].startswith("apache/kafka:")
    assert broker["profiles"] == ["kafka"]
    settings = broker["environment"]
    # KRaft, one node as broker and controller; no ZooKeeper anywhere in the file.
    assert set(settings["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert settings["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{settings['KAFKA_NODE_ID']}@kafka:9093"
    assert not any("zookeeper" in str(spec.get("image", "")) for spec in services.values())
    # Topics are the platform's to declare: an event type without one is unroutable.
    assert settings["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    advertised = dict(
        listener.split("://") for listener in settings["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    for name, spec in kafka_shop.items():
        environment = spec["environment"]
        assert environment["KAFKA_BOOTSTRAP_SERVERS"] == advertised["PLAINTEXT"], name
        # Without AMQP_URL nothing can fall back to RabbitMQ; the topics' partitions, not
        # AGENTBUS_PARTITIONS (AMQP's hash exchange), spread the work.
        assert "AMQP_URL" not in environment, name
        assert "AGENTBUS_PARTITIONS" not in environment, name
        assert spec["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert "rabbitmq-users" not in spec["depends_on"], name
        for dependency in spec["depends_on"]:
            assert services[dependency].get("profiles", ["kafka"]) == ["kafka"], (name, dependency)
        # State of its own: the two shops never write each other's schemas or collections.
        database = urlparse(environment["DATABASE_URL"])
        assert database.hostname in services
        for other in rabbit_shop.values():
            assert urlparse(other["environment"]["DATABASE_URL"]).path != database.path, name
            assert other["environment"]["QDRANT_URL"] != environment["QDRANT_URL"], name
        qdrant = urlparse(environment["QDRANT_URL"]).hostname
        assert services[qdrant]["profiles"] == ["kafka"], name
    made = " ".join(services["kafka-database"]["command"])
    name_of_database = urlparse(kafka_shop["orders-kafka"]["environment"]["DATABASE_URL"]).path
    assert f"CREATE DATABASE {name_of_database[1:]}" in made
    # Scaled out by the partitions of its topics: more partitions than members.
    scaled = {n: s for n, s in kafka_shop.items() if s.get("deploy", {}).get("replicas", 1) > 1}
    assert scaled, "the Kafka shop shows scaling out too"
    for name, spec in scaled.items():
        partitions = int(spec["environment"]["AGENTBUS_KAFKA_PARTITIONS"])
        assert partitions >= spec["deploy"]["replicas"], name
    # Host ports are not taken twice when both shops run.
    published = [port.split(":")[0] for spec in services.values() for port in spec.get("ports", [])]
    assert len(published) == len(set(published))
