"""deploy/helm/agentbus, rendered by a real `helm template` and checked against the
code: one Deployment per service running that service, only variables the code
reads, probes on the port it serves, a disruption budget each, and KEDA scaling
the consumers on the queues they actually read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentbus.retry import partition_queue
from consumers.app import app
from tests.unit.test_compose import names_the_code_reads, otel_names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "agentbus"
RELEASE = "shop"


def helm() -> str:
    # .ci/run builds it into the cache and puts it on PATH; a plain `uv run pytest`
    # after that finds it there too.
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    found = shutil.which("helm") or shutil.which("helm", path=str(cache / "agentbus/helm-v3.16.3"))
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("helm is missing: .ci/run installs it")
        pytest.skip("helm is not installed (go install helm.sh/helm/v3/cmd/helm@v3.16.3)")
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    binary = helm()
    subprocess.run([binary, "lint", "--strict", str(CHART)], check=True, capture_output=True)
    out = subprocess.run(
        [binary, "template", RELEASE, str(CHART)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_one_deployment_per_service_runs_that_service(rendered: list[dict[str, Any]]) -> None:
    deployments = of_kind(rendered, "Deployment")
    run = {name: container(d)["args"] for name, d in deployments.items()}
    assert all(args[0] == "run" and len(args) == 2 for args in run.values()), run
    assert sorted(args[1] for args in run.values()) == sorted(app.services)
    for name, args in run.items():
        assert name == f"{RELEASE}-agentbus-{args[1]}"


def test_every_variable_set_is_one_the_code_reads(rendered: list[dict[str, Any]]) -> None:
    readable = names_the_code_reads() | otel_names()
    [config] = of_kind(rendered, "ConfigMap").values()
    assert not set(config["data"]) - readable, sorted(set(config["data"]) - readable)
    secrets = of_kind(rendered, "Secret")
    [secret] = secrets.values()
    for name, deployment in of_kind(rendered, "Deployment").items():
        env = {e["name"]: e for e in container(deployment)["env"]}
        # AMQP_PASSWORD only feeds $(AMQP_PASSWORD) in AMQP_URL.
        unknown = set(env) - readable - {"AMQP_PASSWORD"}
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
        service = container(deployment)["args"][1]
        assert env["OTEL_SERVICE_NAME"]["value"] == service
        assert env["AMQP_URL"]["value"].startswith(f"amqp://{service}:$(AMQP_PASSWORD)@")
        for entry in env.values():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] in secrets, (name, ref)
                assert ref["key"] in secret["stringData"], (name, ref)
        [source] = container(deployment)["envFrom"]
        assert source["configMapRef"]["name"] == config["metadata"]["name"]
        assert {"AMQP_URL", "DATABASE_URL", "OTEL_SERVICE_NAME"} <= set(env)


def test_probes_ask_the_port_the_service_serves_and_termination_drains(
    rendered: list[dict[str, Any]],
) -> None:
    [config] = of_kind(rendered, "ConfigMap").values()
    port = int(config["data"]["AGENTBUS_METRICS_PORT"])
    for name, deployment in of_kind(rendered, "Deployment").items():
        spec = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        assert ports["metrics"] == port, name
        assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= 60, f"{name}: {grace}s is too short to drain a model call"


def test_every_deployment_has_a_disruption_budget(rendered: list[dict[str, Any]]) -> None:
    deployments = of_kind(rendered, "Deployment")
    budgets = of_kind(rendered, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_keda_scales_the_consumers_on_the_queues_they_read(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = of_kind(rendered, "Deployment")
    scaled = of_kind(rendered, "ScaledObject")
    assert scaled, "consumers scale on queue depth"
    for name, obj in scaled.items():
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, name
        assert "replicas" not in deployments[target]["spec"], "KEDA owns the replica count"
        [service] = app.resolve([container(deployments[target])["args"][1]])
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        pattern = trigger["metadata"]["queueName"]
        assert trigger["metadata"]["useRegex"] == "true"
        for queue in (service.queue, *(partition_queue(service.queue, p) for p in range(6))):
            assert re.fullmatch(pattern, queue), (name, queue)
        for other in set(app.services) - {service.name}:
            assert not re.fullmatch(pattern, other), (name, other)
        assert obj["spec"]["minReplicaCount"] >= 1
    # The console answers people, not a queue.
    assert f"{RELEASE}-agentbus-review" not in scaled


def test_external_servers_come_from_values(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "rabbitmq: {host: mq.example.net, port: 5671}\n"
        "postgresql: {url: 'postgresql://shop@db.example.net/shop'}\n"
        "qdrant: {url: 'http://vectors.example.net:6333'}\n"
    )
    out = subprocess.run(
        [helm(), "template", RELEASE, str(CHART), "-f", str(values)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    [config] = of_kind(docs, "ConfigMap").values()
    assert config["data"]["QDRANT_URL"] == "http://vectors.example.net:6333"
    [secret] = of_kind(docs, "Secret").values()
    assert secret["stringData"]["database-url"] == "postgresql://shop@db.example.net/shop"
    for deployment in of_kind(docs, "Deployment").values():
        env = {e["name"]: e for e in container(deployment)["env"]}
        assert "@mq.example.net:5671/" in env["AMQP_URL"]["value"]
