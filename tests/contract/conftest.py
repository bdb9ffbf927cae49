from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.harness import Harness, MemoryHarness, RabbitHarness


@pytest.fixture(params=["memory", "rabbitmq"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    url = request.getfixturevalue("amqp_url")
    rabbit = RabbitHarness(url)
    try:
        yield rabbit
    finally:
        await rabbit.cleanup()
