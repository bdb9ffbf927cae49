"""An in-memory span exporter installed once for the test session.

OpenTelemetry lets a process set its tracer provider once, so tests share this one
and each takes only the spans finished during it.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter = InMemorySpanExporter()
_installed = False


class SpanRecorder:
    def __init__(self) -> None:
        self._skip = len(_exporter.get_finished_spans())

    def finished(self) -> list[ReadableSpan]:
        return list(_exporter.get_finished_spans())[self._skip :]


def install() -> None:
    global _installed
    if _installed:
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    _installed = True
