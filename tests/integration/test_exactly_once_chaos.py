"""A short chaos run for CI: services SIGKILLed mid-stream, nothing lost or applied twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.chaos import Chaos

pytestmark = [pytest.mark.rabbitmq]


async def test_exactly_once_on_sqlite_under_kills(amqp_url: str, tmp_path: Path) -> None:
    report = await Chaos(amqp_url, tmp_path).run(events=1500, kills=4)
    assert report["kills"] == 4
    assert report["duplicates"] > 100
    assert report["lost"] == 0, report
    assert report["wrong_orders"] == 0, report
    assert report["double_applied_or_wrong_stock"] == 0, report


@pytest.mark.postgres
async def test_exactly_once_on_postgresql_under_kills(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    import uuid

    import psycopg

    name = f"chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url.rsplit("/", 1)[0] + f"/{name}"
        report = await Chaos(amqp_url, tmp_path, database_url=url, seed=12).run(
            events=1500, kills=4
        )
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert report["kills"] == 4
    assert report["lost"] == 0, report
    assert report["wrong_orders"] == 0, report
    assert report["double_applied_or_wrong_stock"] == 0, report
