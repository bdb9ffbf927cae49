"""/healthz, /readyz and /metrics of a running host (in-process broker, SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider

from agentbus.metrics import use_meter_provider
from agentbus.ops import OpsServer
from consumers import inventory
from tests.agents.harness import Shop, product


@pytest.fixture
def prometheus() -> Iterator[None]:
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    use_meter_provider(provider)
    yield
    use_meter_provider(None)
    provider.shutdown()  # unregisters the collector from the default registry


def line_value(text: str, name: str, *labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} with {labels} in /metrics")


@pytest.mark.usefixtures("prometheus")
async def test_health_readiness_and_metrics_of_a_running_service(tmp_path: Path) -> None:
    async with Shop(tmp_path, [inventory.build()]) as shop:
        ops = OpsServer(shop.host, 0, bind="127.0.0.1")
        await ops.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as client:
                assert (await client.get("/healthz")).status_code == 200
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text

                await shop.publish([product("SKU-A"), product("SKU-B")])
                scraped = await client.get("/metrics")
                assert scraped.headers["content-type"].startswith("text/plain")
                text = scraped.text
                processed = line_value(
                    text,
                    "agentbus_consumer_events_total",
                    'messaging_consumer_group_name="inventory"',
                    'messaging_rabbitmq_destination_routing_key="product.upserted"',
                    'outcome="processed"',
                )
                assert processed == 2
                assert line_value(text, "agentbus_queue_depth", '"inventory.dlq"') == 0
                assert line_value(text, "agentbus_outbox_backlog", '"inventory"') == 0
                assert line_value(text, "agentbus_consumer_in_flight", '"inventory"') == 0
                assert "messaging_process_duration_seconds_bucket" in text

                await shop.transport.close()  # the broker connection is gone
                down = await client.get("/readyz")
                assert down.status_code == 503
                assert "broker" in down.json()["problems"]
                assert (await client.get("/healthz")).status_code == 200
        finally:
            await ops.stop()


async def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    from agentbus.errors import ConfigurationError

    async with Shop(tmp_path, [inventory.build()]) as shop:
        first = OpsServer(shop.host, 0, bind="127.0.0.1")
        await first.start()
        try:
            with pytest.raises(ConfigurationError, match="cannot serve metrics"):
                await OpsServer(shop.host, first.port, bind="127.0.0.1").start()
        finally:
            await first.stop()


async def test_not_ready_until_the_consumers_run(tmp_path: Path) -> None:
    async with Shop(tmp_path, [inventory.build()]) as shop:
        await shop.host.stop()
        problems = await shop.host.readiness()
        assert problems == {"host": "starting or stopping"}
        await shop.host.start()
        assert await shop.host.readiness() == {}
