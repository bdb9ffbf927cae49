"""deploy/observability: the alert rules parse as Prometheus rule files, the
dashboard as a Grafana dashboard, both are loaded by docker-compose.yml, and every
metric they name is one the code exports on /metrics (found by recording through
the code's own instruments and reading the Prometheus exposition)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentbus import metrics

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "agentbus.json"

DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan",
}  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


class _Consumer:
    queue = "orders"
    in_flight = 2


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Sample names on /metrics once every instrument of the code has recorded."""
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    metrics.use_meter_provider(provider)
    consumer = _Consumer()
    try:
        meters = metrics.instruments()
        for field in vars(meters).values():
            (field.record if hasattr(field, "record") else field.add)(1, {"outcome": "x"})
        metrics.set_gauge("queue", "orders", 3)
        metrics.set_gauge("outbox", "orders", 1)
        metrics.watch_consumer(consumer)
        text = generate_latest(REGISTRY).decode()
        yield {
            sample.name
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    finally:
        metrics.forget_gauge("queue", "orders")
        metrics.forget_gauge("outbox", "orders")
        metrics.use_meter_provider(None)
        provider.shutdown()


def _balanced(expr: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack, f"unbalanced {char!r} in {expr}"
            assert stack.pop() == pairs[char], f"unbalanced {char!r} in {expr}"
    assert not stack, f"unclosed {stack} in {expr}"


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once strings, label
    matchers, ranges, grouping clauses, functions, keywords and numbers are gone."""
    _balanced(expr)
    for window in re.findall(r"\[([^\]]*)\]", expr):
        assert DURATION.match(window.replace(":", "").strip() or "x"), (expr, window)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group()
        if following.startswith("(") or word.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d", text[match.start() - 1 : match.start()] or " "):
            continue  # a unit of a number such as 1e3
        names.add(word)
    return names


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    assert set(loaded) == {"groups"}
    found: list[dict[str, Any]] = []
    group_names = [group["name"] for group in loaded["groups"]]
    assert len(group_names) == len(set(group_names)), "group names are unique"
    for group in loaded["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group.keys()
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if "record" in rule:
                allowed = {"record", "expr", "labels"}
                assert NAME.match(rule["record"]), rule
            assert set(rule) <= allowed, rule
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    assert DURATION.match(rule[key]), rule
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule
            found.append(rule)
    alerts = [rule["alert"] for rule in found if "alert" in rule]
    assert len(alerts) == len(set(alerts)), "alert names are unique"
    return found


def panel_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_parser_finds_metric_names_and_only_them() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_seconds_bucket{x=~"y.*"}[5m])))'
        " > 5 and on (job) b_total offset 1h unless c"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}
    with pytest.raises(AssertionError):
        metric_names("sum(rate(a[5m])")
    with pytest.raises(AssertionError):
        metric_names("rate(a[5 minutes])")


def test_every_metric_in_a_rule_or_panel_is_exported(exported: set[str]) -> None:
    expressions = [rule["expr"] for rule in rules()] + panel_expressions()
    named = set().union(*(metric_names(expr) for expr in expressions))
    assert named, "the rules and panels name metrics"
    unknown = named - exported
    assert not unknown, f"named but not exported: {sorted(unknown)} (exported: {sorted(exported)})"


def test_the_documented_alerts_are_rules() -> None:
    """Every metric of the docs' alert table has a rule watching it."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    table = docs.split("| metric | alert when |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\s*\| `([a-z_A-Z]+)", table, re.MULTILINE))
    watched = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert documented
    assert {n.removesuffix("_bucket") for n in watched} >= documented


def test_the_compose_stack_loads_the_rules_and_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in prometheus["volumes"]}
    config_path = mounts["./deploy/prometheus.yml"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [rule_file] = config["rule_files"]
    assert mounts["./deploy/observability/alerts.yml"] == rule_file
    assert config_path in " ".join(prometheus["command"])
    grafana = services["grafana"]
    mounted = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    assert mounted["./deploy/observability/grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "agentbus.yml").read_text())[
        "providers"
    ]
    assert mounted["./deploy/observability/grafana/dashboards"] == provider["options"]["path"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
