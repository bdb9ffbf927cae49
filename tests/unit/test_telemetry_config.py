"""Telemetry from the standard OTEL_* variables: what is refused, and what turns it off."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentbus.errors import ConfigurationError
from agentbus.metrics import configure_metrics
from agentbus.telemetry import configure_tracing, exporter_names, extract_context


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


VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


@pytest.mark.parametrize(
    ("headers", "fallback"),
    [
        ({"traceparent": VALID, "agentbus-key": "SKU-1", "x-attempt": 2}, None),
        ({"traceparent": VALID, "tracestate": "vendor=value"}, None),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, OTHER),
        ({"traceparent": "garbage"}, OTHER),
        ({"traceparent": VALID.upper()}, None),
        ({"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x"}, None),
        ({"traceparent": b"not a string"}, OTHER),
        ({}, OTHER),
        ({}, None),
    ],
)
def test_the_context_read_from_headers_is_the_w3c_propagators(
    headers: dict[str, object], fallback: str | None
) -> None:
    # The common case skips the propagator; every case must read as it would.
    carrier = {k: v for k, v in headers.items() if isinstance(v, str)}
    if "traceparent" not in carrier and fallback:
        carrier["traceparent"] = fallback
    expected = TraceContextTextMapPropagator().extract(carrier)
    found = extract_context(headers, fallback)
    assert trace.get_current_span(found).get_span_context() == (
        trace.get_current_span(expected).get_span_context()
    )
