"""docker-compose.yml, checked by reading it (no Docker engine here): every service
runs a real `agentbus run` service, sets only variables something reads, reports
health on the port it serves, and sends traces to the Jaeger in the file."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from opentelemetry.sdk import environment_variables as otel_variables

from consumers.app import app

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentbus", "events", "consumers", "agents", "tools", "evals")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("image", "").startswith("agentbus")
    }


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


def test_every_application_service_runs_and_runs_a_real_service(compose: dict[str, Any]) -> None:
    services = ours(compose)
    commands = {name: spec["command"] for name, spec in services.items()}
    for name, command in commands.items():
        assert command[0] == "run", name
        assert set(command[1:]) <= set(app.services), (name, command)
    deployed = {service for command in commands.values() for service in command[1:]}
    assert deployed == set(app.services), "every service of the application is deployed"


def test_every_variable_set_is_one_that_is_read(compose: dict[str, Any]) -> None:
    readable = names_the_code_reads() | otel_names()
    for name, spec in ours(compose).items():
        unknown = set(spec["environment"]) - readable
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
        environment = spec["environment"]
        for variable in ("AMQP_URL", "DATABASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            assert variable in environment, (name, variable)
        assert environment["OTEL_SERVICE_NAME"] == name
        assert environment["OTEL_TRACES_EXPORTER"] == "otlp"


def test_urls_point_at_services_of_the_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in ours(compose).items():
        environment = spec["environment"]
        for variable in ("AMQP_URL", "DATABASE_URL", "QDRANT_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            host = urlparse(environment[variable]).hostname
            assert host in services, (name, variable, host)
        otlp = urlparse(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert otlp.hostname == "jaeger"
        assert otlp.port == 4318, "OTLP over HTTP, the protocol installed"
        for dependency in spec["depends_on"]:
            assert dependency in services, (name, dependency)
    assert services["jaeger"]["image"].startswith("jaegertracing/")


def test_health_checks_ask_the_port_the_service_serves(compose: dict[str, Any]) -> None:
    for name, spec in ours(compose).items():
        port = spec["environment"]["AGENTBUS_METRICS_PORT"]
        probe = " ".join(spec["healthcheck"]["test"])
        assert f":{port}/readyz" in probe, name
    scraped = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {
        t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    expected = {
        f"{name}:{spec['environment']['AGENTBUS_METRICS_PORT']}"
        for name, spec in ours(compose).items()
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
