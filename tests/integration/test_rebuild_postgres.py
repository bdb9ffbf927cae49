"""`agentbus rebuild --check` against a live database on PostgreSQL.

The live state is made by the services' own handlers on PostgreSQL (a schema per
service), the rebuilt one on SQLite: the comparison must see through the engines
(decimals, schemas) and still name a row changed by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agentbus.envelope import EventCodec
from agentbus.rebuild import rebuild, rebuild_settings
from agentbus.settings import Settings
from consumers import inventory, payments
from events import CATALOG
from tests.e2e.shop import EventFactory

pytestmark = pytest.mark.postgres


@pytest.fixture
def live_url(database_url: str) -> Iterator[str]:
    name = f"agentbus_rebuild_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def agentbus(*args: str, url: str, data: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    environ.update(AGENTBUS_APP="consumers.app:app", AGENTBUS_DATA=str(data), DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def test_check_compares_with_a_live_postgresql_state(live_url: str, tmp_path: Path) -> None:
    f = EventFactory()
    story = [
        f.product("A"),
        f.received("A", 10),
        f.order("o-1", [("A", 3, "19.99")]),
        f.order("o-2", [("A", 2, "0.05")]),
    ]
    recording = tmp_path / "run.jsonl"
    codec = EventCodec(CATALOG)
    recording.write_bytes(b"".join(codec.encode(event) + b"\n" for event in story))
    base = rebuild_settings(Settings.from_env({}), tmp_path / "unused")
    live = dataclasses.replace(base, database_url=live_url, stores_on_loop=False)
    for build in (inventory.build, payments.build):
        asyncio.run(rebuild(build(), story, codec, live))

    for service in ("inventory", "payments"):
        result = agentbus(
            "rebuild", service, str(recording), "--check", url=live_url, data=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "equal to the live state" in result.stdout

    with psycopg.connect(live_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE payments.order_amounts SET amount = 59.98 WHERE order_id = 'o-1'"
        )
    result = agentbus("rebuild", "payments", str(recording), "--check", url=live_url, data=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "order_amounts[o-1].amount: rebuilt Decimal('59.97'), live Decimal('59.98')" in (
        result.stdout
    )
