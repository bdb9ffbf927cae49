"""The API on PostgreSQL, where each request has a transaction of its own: the same
key sent many times at once, and many decisions on one suggestion at once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from consumers.api import HttpApi
from consumers.api.app import build_app
from consumers.api.auth import Tokens
from consumers.review.readmodel import audit
from tests.agents.harness import Shop, product
from tests.api.shop import OTHER_TOKEN, TOKEN, ApiShop, restock_suggestion
from tests.integration.chaos import create_database

pytestmark = pytest.mark.postgres

COPIES = 8
ORDER = {"customer_id": "c-1", "lines": [{"sku": "SKU-A", "quantity": 1}], "currency": "EUR"}


async def test_racing_requests_make_one_order_per_key_and_one_decision(
    database_url: str, tmp_path: Path
) -> None:
    name = f"api_{uuid.uuid4().hex[:10]}"
    url = await create_database(database_url, name)
    try:
        await race(url, tmp_path)
    finally:
        await asyncio.to_thread(drop_database, database_url, name)


def drop_database(server_url: str, name: str) -> None:
    engine = sa.create_engine(
        "postgresql+psycopg://" + server_url.partition("://")[2], isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


async def race(url: str, tmp_path: Path) -> None:
    api = HttpApi(Tokens.of([TOKEN, OTHER_TOKEN]), port=0)
    shop = Shop(tmp_path, [api.service], database_url=url)
    async with shop:
        assert api.store.database.dialect == "postgresql"
        running = ApiShop(shop, api, build_app(api.context()))
        await shop.publish([product("SKU-A"), restock_suggestion(1)])
        async with running.client() as client:
            placed = await asyncio.gather(
                *(
                    client.post("/orders", json=ORDER, headers={"Idempotency-Key": "same"})
                    for _ in range(COPIES)
                )
            )
            assert {p.status_code for p in placed} == {202}, [p.text for p in placed]
            assert len({p.text for p in placed}) == 1
            decisions = await asyncio.gather(
                *(
                    client.post(
                        "/suggestions/rec-1/reject",
                        json={"reason": f"reason {n}"},
                        headers={"Idempotency-Key": f"decide-{n}"},
                    )
                    for n in range(COPIES)
                )
            )
            statuses = sorted(d.status_code for d in decisions)
            assert statuses == [200] + [409] * (COPIES - 1), [d.text for d in decisions]
        await running.settle()
        assert len(shop.of_type("order.created")) == 1
        assert len(shop.of_type("restock.rejected")) == 1

        def actions(connection: sa.Connection) -> list[str]:
            return list(connection.scalars(sa.select(audit.c.action).order_by(audit.c.seq)))

        # In the console's schema: the one owner of decisions, and of their audit log.
        logged = await api.decisions.database.read(actions)
        assert sorted(logged) == ["decision_refused"] * (COPIES - 1) + ["rejected"]
