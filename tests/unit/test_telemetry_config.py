"""Telemetry from the standard OTEL_* variables: what is refused, and what turns it off."""

from __future__ import annotations

import pytest

from agentbus.errors import ConfigurationError
from agentbus.metrics import configure_metrics
from agentbus.telemetry import configure_tracing, exporter_names


def test_exporter_lists_default_to_none_and_ignore_case_and_blanks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert exporter_names("OTEL_TRACES_EXPORTER") == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", " OTLP, console ,, none")
    assert exporter_names("OTEL_TRACES_EXPORTER") == ["otlp", "console"]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    assert exporter_names("OTEL_TRACES_EXPORTER") is None
    assert configure_tracing("x") is None
    assert configure_metrics("x", prometheus=True) is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_METRICS_EXPORTER": "zipkin"}, "unknown OTEL_METRICS_EXPORTER 'zipkin'"),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTLP protocol 'grpc' is not installed",
        ),
    ],
)
def test_a_bad_metrics_setting_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        configure_metrics("x")


def test_a_bad_traces_protocol_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="use http/protobuf"):
        configure_tracing("x")
