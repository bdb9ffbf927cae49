"""One trace as a tree in the terminal: spans kept in memory, drawn with rich."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.tree import Tree

from agentbus.telemetry import use_tracer_provider

# What is worth a glance beside a span's name (which names the routing key), in this order.
SHOWN = (
    ("gen_ai.response.model", "model {}"),
    ("gen_ai.usage.input_tokens", "in {} tok"),
    ("gen_ai.usage.output_tokens", "out {} tok"),
    ("agentbus.gen_ai.usage.cost_usd", "${:.6f}"),
)


class TraceRecorder:
    """Records every span of this process in memory while installed."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def __enter__(self) -> TraceRecorder:
        use_tracer_provider(self.provider)
        return self

    def __exit__(self, *exc: object) -> None:
        use_tracer_provider(None)

    def spans_of(self, trace_id: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.context is not None and f"{span.context.trace_id:032x}" == trace_id
        ]


def _children(spans: Sequence[ReadableSpan]) -> tuple[list[ReadableSpan], dict[int, list[Any]]]:
    ids = {span.context.span_id for span in spans if span.context is not None}
    roots: list[ReadableSpan] = []
    children: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        if parent is None or parent not in ids:
            roots.append(span)
        else:
            children.setdefault(parent, []).append(span)
    return roots, children


def _duration_ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6


def _details(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    shown = [form.format(attributes[key]) for key, form in SHOWN if key in attributes]
    return f" [dim]{', '.join(shown)}[/]" if shown else ""


def trace_tree(spans: Sequence[ReadableSpan], trace_id: str) -> Tree:
    """The spans of one trace, parents above children, siblings by start time."""
    tree = Tree(f"[bold]trace {trace_id}[/] [dim]({len(spans)} spans)[/]")
    roots, children = _children(spans)

    def add(branch: Tree, span: ReadableSpan) -> None:
        failed = " [red]error[/]" if not span.status.is_ok else ""
        node = branch.add(
            f"{span.name} [cyan]{_duration_ms(span):.1f} ms[/]{_details(span)}{failed}"
        )
        for child in children.get(span.context.span_id if span.context else 0, []):
            add(node, child)

    for root in roots:
        add(tree, root)
    return tree


def trace_json(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """The same tree as nested JSON."""
    roots, children = _children(spans)

    def node(span: ReadableSpan) -> dict[str, Any]:
        span_id = span.context.span_id if span.context else 0
        return {
            "name": span.name,
            "span_id": f"{span_id:016x}",
            "duration_ms": round(_duration_ms(span), 3),
            "attributes": dict(span.attributes or {}),
            "children": [node(child) for child in children.get(span_id, [])],
        }

    return [node(root) for root in roots]
