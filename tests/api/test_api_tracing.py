"""An HTTP request and the events it caused share one trace, and requests are measured
under the HTTP semantic conventions' names."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind

from agentbus.metrics import use_meter_provider
from consumers import orders
from tests.agents.harness import product
from tests.api.shop import api_shop, restock_suggestion
from tests.tracing import SpanRecorder

ORDER = {"customer_id": "c-1", "lines": [{"sku": "SKU-A", "quantity": 1}], "currency": "EUR"}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_request_and_the_events_it_caused_share_one_trace(
    tmp_path: Path, spans: SpanRecorder
) -> None:
    reader = InMemoryMetricReader()
    use_meter_provider(MeterProvider(metric_readers=[reader]))
    try:
        async with api_shop(tmp_path, [orders.build()]) as shop:
            await shop.shop.publish([product("SKU-A"), restock_suggestion(1)])
            async with shop.client() as client:
                placed = await client.post(
                    "/orders",
                    json=ORDER,
                    headers={
                        "Idempotency-Key": "t-1",
                        "traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01",
                    },
                )
                assert placed.status_code == 202
                decided = await client.post(
                    "/suggestions/rec-1/reject",
                    json={"reason": "not now"},
                    headers={"Idempotency-Key": "t-2"},
                )
                assert decided.status_code == 200
            await shop.settle()
            [created] = shop.shop.of_type("order.created")
            [rejected] = shop.shop.of_type("restock.rejected")
    finally:
        use_meter_provider(None)
    finished = spans.finished()
    [server] = [s for s in finished if s.name == "POST /orders"]
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert format(server.context.trace_id, "032x") == CLIENT_TRACE  # the client's trace
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/orders"
    assert server.attributes["http.response.status_code"] == 202
    assert created.traceparent is not None
    assert CLIENT_TRACE in created.traceparent
    in_trace = [
        s
        for s in finished
        if s.context is not None and s.context.trace_id == server.context.trace_id
    ]
    kinds = {(s.kind, s.name.split(" ")[0]) for s in in_trace}
    assert (SpanKind.PRODUCER, "publish") in kinds, kinds
    assert (SpanKind.CONSUMER, "process") in kinds, kinds  # orders handled it in this trace
    # The decision joins its request's trace and links to the suggestion's.
    [decision] = [s for s in finished if s.name == "POST /suggestions/{suggestion_id}/reject"]
    assert decision.context is not None
    assert rejected.traceparent is not None
    assert format(decision.context.trace_id, "032x") in rejected.traceparent
    measured = reader.get_metrics_data()
    assert measured is not None
    names = {
        metric.name
        for resource in measured.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "http.server.request.duration" in names
