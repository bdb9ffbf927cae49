"""The platform's OpenTelemetry metrics, and their set-up from `OTEL_*` variables.

Names follow the semantic conventions where one exists (`messaging.process.duration`,
`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`); the rest live
under `agentbus.*`. Counters are added once per batch, not once per event: the
consumer's hot path pays one call per event type in a batch.

Gauges read cached values: an observable callback runs in the exporter's thread
and cannot ask the broker or a database, so the host refreshes queue depths and
outbox backlogs on a timer (see `agentbus.ops`).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)

from agentbus.errors import ConfigurationError
from agentbus.telemetry import exporter_names, require_http_protobuf, service_resource

METER_NAME = "agentbus"

# Seconds: from a millisecond to a long model call.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class _HasInFlight(Protocol):
    @property
    def queue(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


@dataclass
class Instruments:
    events: metrics.Counter
    process_duration: metrics.Histogram
    token_usage: metrics.Histogram
    model_duration: metrics.Histogram
    model_calls: metrics.Counter
    model_cost: metrics.Counter
    fallbacks: metrics.Counter
    agent_runs: metrics.Counter
    suggestions: metrics.Counter
    published: metrics.Counter


_override: metrics.MeterProvider | None = None
_instruments: dict[int, Instruments] = {}
_consumers: weakref.WeakSet[Any] = weakref.WeakSet()
# (kind, name) -> value, refreshed by the host; read by observable gauges.
_gauges: dict[tuple[str, str], float] = {}


def use_meter_provider(provider: metrics.MeterProvider | None) -> None:
    """Record with `provider` instead of the global one (None: back to global); for tests."""
    global _override
    _override = provider
    _instruments.clear()


def meter_provider() -> metrics.MeterProvider:
    """The provider agentbus records with: the override, else the global one."""
    return _override or metrics.get_meter_provider()


def instruments() -> Instruments:
    provider = _override
    if provider is None:
        # Made once, through the API's proxy while no global provider is set, which
        # they then follow: asking for the global provider on every call reads the
        # process environment each time none is set (an offline replay: ~3,000 a run).
        found = _instruments.get(_GLOBAL)
        if found is None:
            found = _instruments[_GLOBAL] = _create(metrics.get_meter(METER_NAME))
        return found
    found = _instruments.get(id(provider))
    if found is None:
        found = _instruments[id(provider)] = _create(provider.get_meter(METER_NAME))
    return found


_GLOBAL = 0  # the key of the global provider's instruments: no object's id is 0


def watch_consumer(consumer: _HasInFlight) -> None:
    """Report the consumer's in-flight deliveries while it lives."""
    _consumers.add(consumer)


def set_gauge(kind: str, name: str, value: float) -> None:
    _gauges[(kind, name)] = value


def forget_gauge(kind: str, name: str) -> None:
    _gauges.pop((kind, name), None)


def _create(meter: metrics.Meter) -> Instruments:
    meter.create_observable_gauge(
        "agentbus.consumer.in_flight",
        callbacks=[_observe_in_flight],
        unit="{message}",
        description="Deliveries taken from the queue and not yet settled",
    )
    meter.create_observable_gauge(
        "agentbus.queue.depth",
        callbacks=[_observer("queue", "messaging.destination.name")],
        unit="{message}",
        description="Messages ready in a consumer's queues (main, retry, dead letter)",
    )
    meter.create_observable_gauge(
        "agentbus.outbox.backlog",
        callbacks=[_observer("outbox", "agentbus.service")],
        unit="{event}",
        description="Events committed to a service's outbox and not yet confirmed by the broker",
    )
    return Instruments(
        events=meter.create_counter(
            "agentbus.consumer.events",
            unit="{event}",
            description="Deliveries handled, by consumer, event type and outcome "
            "(processed, failed, retried, dead_lettered, ignored)",
        ),
        process_duration=meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Time to handle a delivery, or the batch it was handled in "
            "(one point per batch)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        token_usage=meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens per model call, by gen_ai.token.type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        ),
        model_duration=meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Time of a model call",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        model_calls=meter.create_counter(
            "agentbus.agent.model_calls",
            unit="{call}",
            description="Model calls per agent and model, by outcome",
        ),
        model_cost=meter.create_counter(
            "agentbus.agent.model_cost",
            unit="USD",
            description="Spend on model calls per agent and model (price table: "
            "AGENTBUS_MODEL_PRICES)",
        ),
        fallbacks=meter.create_counter(
            "agentbus.agent.fallbacks",
            unit="{run}",
            description="Runs decided by the offline policy instead of the model, by reason",
        ),
        agent_runs=meter.create_counter(
            "agentbus.agent.runs",
            unit="{run}",
            description="Triggers per agent, by outcome (completed, coalesced, duplicate)",
        ),
        suggestions=meter.create_counter(
            "agentbus.agent.suggestions",
            unit="{suggestion}",
            description="Suggestions made (pending) and decided (approved, rejected)",
        ),
        published=meter.create_counter(
            "agentbus.outbox.published",
            unit="{event}",
            description="Events the outbox relay published with confirms",
        ),
    )


def _observe_in_flight(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(consumer.in_flight, {"messaging.consumer.group.name": consumer.queue})
        for consumer in list(_consumers)
    ]


def _observer(kind: str, label: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {label: name})
            for (found, name), value in list(_gauges.items())
            if found == kind
        ]

    return observe


def configure_metrics(service_name: str, *, prometheus: bool = False) -> MeterProvider | None:
    """Install a meter provider configured by `OTEL_METRICS_EXPORTER` (otlp, console, none).

    An unset variable means no exporter, as for traces. `prometheus=True` (a
    `--metrics-port` was given) adds a reader that `/metrics` serves.
    """
    names = exporter_names("OTEL_METRICS_EXPORTER")
    if names is None:
        return None
    readers: list[MetricReader] = [PeriodicExportingMetricReader(_exporter(n)) for n in names]
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    if not readers:
        return None
    provider = MeterProvider(metric_readers=readers, resource=service_resource(service_name))
    metrics.set_meter_provider(provider)
    instruments()  # the gauges report from the start, before any event arrives
    return provider


def _exporter(name: str) -> MetricExporter:
    if name == "console":
        return ConsoleMetricExporter(out=sys.stderr)
    if name == "otlp":
        require_http_protobuf("METRICS")
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    raise ConfigurationError(f"unknown OTEL_METRICS_EXPORTER {name!r}: use otlp, console or none")


def shutdown_metrics() -> None:
    provider = metrics.get_meter_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()
