"""OpenTelemetry set-up and the messaging conventions agentbus follows.

Span names and attributes follow the OpenTelemetry messaging semantic
conventions: a PRODUCER span `publish <exchange>` for each published event and a
CONSUMER span `process <queue>` for each handled one, parented to the producer's
context carried in the W3C `traceparent`/`tracestate` message headers.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError

TRACER_NAME = "agentbus"
_propagator = TraceContextTextMapPropagator()


_override: trace.TracerProvider | None = None
_tracers: dict[int, trace.Tracer] = {}


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Trace agentbus with `provider` instead of the global one (None: back to global).

    For tests and benchmarks that compare tracing on and off in one process: the
    global provider can be set only once.
    """
    global _override
    _override = provider
    _tracers.clear()


def tracer_provider() -> trace.TracerProvider:
    """The provider agentbus traces with: the override, else the global one."""
    return _override or trace.get_tracer_provider()


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in progress, if it records one: what an event
    made now carries, so that its publish and handling join this trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, Any] = {}
    inject_headers(carrier)
    found = carrier.get("traceparent")
    return found if isinstance(found, str) else None


def tracer() -> trace.Tracer:
    provider = _override
    if provider is None:
        # The API's proxy while no global provider is set, which it then follows: asking
        # for the global provider on every span reads the process environment each time
        # none is set (an offline replay: ~6,000 a run).
        global _global_tracer
        if _global_tracer is None:
            _global_tracer = trace.get_tracer(TRACER_NAME)
        return _global_tracer
    key = id(provider)
    found = _tracers.get(key)
    if found is None:
        found = _tracers[key] = provider.get_tracer(TRACER_NAME)
    return found


_global_tracer: trace.Tracer | None = None


def inject_headers(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Write the current (or given) trace context into AMQP headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    headers.update(carrier)


def extract_context(headers: Mapping[str, Any], fallback_traceparent: str | None = None) -> Context:
    """The producer's context from AMQP headers, else from the event's traceparent."""
    traceparent = headers.get("traceparent")
    if isinstance(traceparent, str) and "tracestate" not in headers:
        found = _version_00(traceparent)
        if found is not None:
            return found
    carrier = {k: v for k, v in headers.items() if isinstance(v, str)}
    if "traceparent" not in carrier and fallback_traceparent:
        carrier["traceparent"] = fallback_traceparent
    return _propagator.extract(carrier)


# The common case, a version-00 traceparent and no tracestate, read without the
# propagator's general machinery (a third of its cost); anything else goes to it.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _version_00(traceparent: str) -> Context | None:
    match = _TRACEPARENT_00.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None  # invalid: the propagator ignores it as well
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16))
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install a tracer provider configured by the standard `OTEL_*` variables.

    `OTEL_TRACES_EXPORTER` is a comma-separated list of `otlp`, `console` and `none`.
    Unlike the SDK's own default, an unset variable means no exporter here, so a
    laptop without a collector stays quiet; the OTLP exporter reads
    `OTEL_EXPORTER_OTLP_*` itself. `OTEL_SDK_DISABLED=true` turns everything off.
    """
    names = exporter_names("OTEL_TRACES_EXPORTER")
    if names is None:
        return None
    exporters = [_exporter(name) for name in names]
    provider = TracerProvider(resource=service_resource(service_name))
    for exporter in exporters:
        processor = (
            SimpleSpanProcessor(exporter)
            if isinstance(exporter, ConsoleSpanExporter)
            else BatchSpanProcessor(exporter)
        )
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(_propagator)
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        # stderr, so that spans never mix with the JSON a command prints.
        return ConsoleSpanExporter(out=sys.stderr)
    if name == "otlp":
        require_http_protobuf("TRACES")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ConfigurationError(f"unknown OTEL_TRACES_EXPORTER {name!r}: use otlp, console or none")


def exporter_names(variable: str) -> list[str] | None:
    """The exporters an `OTEL_*_EXPORTER` variable names (unset: none, unlike the SDK,
    so a laptop without a collector stays quiet); None when `OTEL_SDK_DISABLED=true`."""
    env = load_environment()
    if env.otel_sdk_disabled:
        return None
    chosen = env.otel_traces_exporter if "TRACES" in variable else env.otel_metrics_exporter
    names = [n.strip().lower() for n in chosen.split(",")]
    return [name for name in names if name and name != "none"]


def require_http_protobuf(signal: str) -> None:
    """Only OTLP over HTTP with protobuf is installed: say so at start, not at export."""
    env = load_environment()
    per_signal = (
        env.otel_exporter_otlp_traces_protocol
        if signal == "TRACES"
        else env.otel_exporter_otlp_metrics_protocol
    )
    protocol = per_signal or env.otel_exporter_otlp_protocol
    if protocol != "http/protobuf":
        raise ConfigurationError(f"OTLP protocol {protocol!r} is not installed; use http/protobuf")


def service_resource(service_name: str) -> Resource:
    """`OTEL_SERVICE_NAME` if set, else the name the command gives; plus `OTEL_RESOURCE_*`."""
    chosen = load_environment().otel_service_name or service_name
    return Resource.create({"service.name": chosen})


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()
