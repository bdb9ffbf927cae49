"""One-off applications for CLI tests, configured by the environment."""

from __future__ import annotations

import os

from agentbus.app import Application
from agentbus.service import Service
from tests.contract import app as test_app


def _echo() -> Service:
    service = test_app.echo()
    service.queue = os.environ["TEST_ECHO_QUEUE"]
    return service


make_echo = Application(name="test", catalog=test_app.CATALOG, services={"echo": _echo})
