"""Shared fixtures: real servers when they answer, a clear skip when they do not.

Under CI=true a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

from tests.tracing import SpanRecorder, install

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require_server(name: str, url: str, default_port: int) -> str:
    if _answers(url, default_port):
        return url
    where = urlparse(url)
    message = f"{name} does not answer at {where.hostname}:{where.port or default_port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing server is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return require_server("RabbitMQ", AMQP_URL, 5672)


@pytest.fixture(scope="session")
def database_url() -> str:
    return require_server("PostgreSQL", DATABASE_URL, 5432)


@pytest.fixture
def spans() -> SpanRecorder:
    """Spans finished during the test (an in-memory exporter, installed once)."""
    install()
    return SpanRecorder()
