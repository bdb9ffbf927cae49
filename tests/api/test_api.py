"""The HTTP API in process: tokens, problem documents, idempotent writes that
become exactly one event, prices from the catalog, reads from projections and
decisions on any agent's suggestions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumers import purchasing
from tests.agents.harness import product
from tests.api.shop import (
    OTHER_TOKEN,
    ApiShop,
    api_shop,
    restock_suggestion,
    substitute_suggestion,
)

ORDER = {
    "customer_id": "c-1",
    "lines": [{"sku": "SKU-A", "quantity": 2}, {"sku": "SKU-B", "quantity": 1}],
    "currency": "EUR",
    "note": None,
}


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[ApiShop]:
    async with api_shop(tmp_path, [purchasing.build()]) as running:
        await running.shop.publish([product("SKU-A"), product("SKU-B"), product("SKU-C")])
        yield running


def is_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def test_every_path_but_the_public_ones_needs_a_valid_token(shop: ApiShop) -> None:
    async with shop.client(token=None) as anonymous, shop.client("wrong-token") as wrong:
        for path in ("/orders/x", "/inventory/SKU-A", "/suggestions", "/metrics", "/nowhere"):
            for client in (anonymous, wrong):
                refused = is_problem(await client.get(path), 401)
                assert "bearer" in refused["detail"]
        refused_write = await anonymous.post(
            "/orders", json=ORDER, headers={"Idempotency-Key": "k"}
        )
        is_problem(refused_write, 401)
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert (await anonymous.get(path)).status_code == 200, path
    assert shop.shop.of_type("order.created") == []


async def test_an_order_is_priced_from_the_catalog_not_by_the_client(shop: ApiShop) -> None:
    priced_by_client = {
        **ORDER,
        "lines": [{"sku": "SKU-A", "quantity": 2, "unit_price": 0.01}],
    }
    async with shop.client() as client:
        refused = await client.post(
            "/orders", json=priced_by_client, headers={"Idempotency-Key": "k-1"}
        )
        body = is_problem(refused, 422)
        assert any("unit_price" in error["location"] for error in body["errors"])
        placed = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-2"})
        assert placed.status_code == 202, placed.text
        answer = placed.json()
        assert answer["status"] == "pending"
        assert answer["total"] == 28.5  # 2 x 9.5 + 1 x 9.5, the catalog's price
        await shop.settle()
        [created] = shop.shop.of_type("order.created")
        assert created.data.order_id == answer["order_id"]
        assert [(x.sku, x.quantity, float(x.unit_price)) for x in created.data.lines] == [
            ("SKU-A", 2, 9.5),
            ("SKU-B", 1, 9.5),
        ]
        seen = await client.get(f"/orders/{answer['order_id']}")
        assert seen.status_code == 200
        assert seen.json()["total"] == 28.5
        assert seen.json()["lines"][0] == {"sku": "SKU-A", "quantity": 2, "unit_price": 9.5}


async def test_a_changed_price_prices_the_next_order(shop: ApiShop) -> None:
    product_body = {
        "name": "Chef knife",
        "description": "Sharp.",
        "category": "kitchen",
        "unit_cost": 10,
        "unit_price": 19.99,
        "lead_time_days": 3,
        "reorder_point": 5,
        "max_stock": 40,
        "supplier": "acme",
    }
    async with shop.client() as client:
        put = await client.put(
            "/products/SKU-A", json=product_body, headers={"Idempotency-Key": "p-1"}
        )
        assert put.status_code == 202, put.text
        order = {**ORDER, "lines": [{"sku": "SKU-A", "quantity": 3}]}
        placed = await client.post("/orders", json=order, headers={"Idempotency-Key": "o-1"})
        assert placed.json()["total"] == 59.97


async def test_an_unknown_sku_is_422_and_emits_nothing(shop: ApiShop) -> None:
    order = {**ORDER, "lines": [{"sku": "NOPE", "quantity": 1}]}
    async with shop.client() as client:
        body = is_problem(
            await client.post("/orders", json=order, headers={"Idempotency-Key": "u-1"}), 422
        )
        assert "NOPE" in body["detail"]
    await shop.settle()
    assert shop.shop.of_type("order.created") == []


async def test_a_key_repeated_with_the_same_body_answers_the_same_and_emits_once(
    shop: ApiShop,
) -> None:
    async with shop.client() as client, shop.client(OTHER_TOKEN) as other:
        first = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": "same"})
        again = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": "same"})
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers["idempotent-replayed"] == "true"
        changed = {**ORDER, "customer_id": "c-2"}
        conflict = await client.post("/orders", json=changed, headers={"Idempotency-Key": "same"})
        assert "another request" in is_problem(conflict, 409)["detail"]
        # A key is the client's own: another client's same key is another order.
        theirs = await other.post("/orders", json=ORDER, headers={"Idempotency-Key": "same"})
        assert theirs.status_code == 202
        assert theirs.json()["order_id"] != first.json()["order_id"]
    await shop.settle()
    created = shop.shop.of_type("order.created")
    assert sorted(e.data.order_id for e in created) == sorted(
        [first.json()["order_id"], theirs.json()["order_id"]]
    )


async def test_writes_without_a_key_are_400_and_bad_input_is_a_problem(shop: ApiShop) -> None:
    async with shop.client() as client:
        missing = is_problem(await client.post("/orders", json=ORDER), 400)
        assert "Idempotency-Key" in missing["detail"]
        key = {"Idempotency-Key": "b-1"}
        not_json = await client.post("/orders", content=b"{", headers=key)
        is_problem(not_json, 422)
        zero = {**ORDER, "lines": [{"sku": "SKU-A", "quantity": 0}]}
        body = is_problem(await client.post("/orders", json=zero, headers=key), 422)
        assert "lines.0.quantity" in body["detail"]
        nul = {**ORDER, "customer_id": "c\x00"}
        is_problem(await client.post("/orders", json=nul, headers=key), 422)
        is_problem(await client.get("/orders/nothing-here"), 404)
        is_problem(await client.get("/inventory/NOPE"), 404)
        is_problem(await client.delete("/orders/x"), 405)
        cancel = await client.post(
            "/orders/nothing-here/cancel", json={"reason": "x"}, headers={"Idempotency-Key": "c"}
        )
        is_problem(cancel, 404)


async def test_stock_and_orders_are_read_from_the_events(shop: ApiShop) -> None:
    async with shop.client() as client:
        receipt = {"sku": "SKU-A", "quantity": 10, "purchase_order_id": None}
        taken = await client.post("/stock/receipts", json=receipt, headers={"Idempotency-Key": "r"})
        assert taken.status_code == 202
        assert (await client.get("/inventory/SKU-A")).json() == {
            "sku": "SKU-A",
            "on_hand": 10,
            "reserved": 0,
            "available": 10,
        }
        order = {**ORDER, "lines": [{"sku": "SKU-A", "quantity": 4}]}
        placed = await client.post("/orders", json=order, headers={"Idempotency-Key": "o"})
        order_id = placed.json()["order_id"]
        cancelled = await client.post(
            f"/orders/{order_id}/cancel",
            json={"reason": "changed my mind"},
            headers={"Idempotency-Key": "c"},
        )
        assert cancelled.status_code == 202
        await shop.settle()
        [cancel] = shop.shop.of_type("order.cancelled")
        [created] = shop.shop.of_type("order.created")
        assert cancel.correlationid == created.correlationid
        # Without the inventory service nothing reserves: the stock is as received.
        assert (await client.get("/inventory/SKU-A")).json()["available"] == 10


async def test_a_restock_suggestion_is_decided_once_with_an_audit_row(shop: ApiShop) -> None:
    await shop.shop.publish([restock_suggestion(1)])
    async with shop.client() as client, shop.client(OTHER_TOKEN) as other:
        listed = (await client.get("/suggestions", params={"status": "pending"})).json()
        assert [(s["id"], s["type"], s["status"]) for s in listed] == [
            ("rec-1", "restock.recommended", "pending")
        ]
        approved = await client.post(
            "/suggestions/rec-1/approve",
            json={"quantity": 42, "note": "supplier minimum"},
            headers={"Idempotency-Key": "a-1"},
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["event_type"] == "restock.approved"
        second = await other.post(
            "/suggestions/rec-1/reject",
            json={"reason": "too many"},
            headers={"Idempotency-Key": "a-2"},
        )
        assert "approved already" in is_problem(second, 409)["detail"]
        replayed = await client.post(
            "/suggestions/rec-1/approve",
            json={"quantity": 42, "note": "supplier minimum"},
            headers={"Idempotency-Key": "a-1"},
        )
        assert replayed.json() == approved.json()
        await shop.settle()
        [decision] = shop.shop.of_type("restock.approved")
        assert decision.id == approved.json()["event_id"]
        assert decision.data.quantity == 42
        assert decision.causationid == "restock-suggestion-1"
        assert shop.shop.of_type("restock.rejected") == []
        [purchase] = shop.shop.of_type("purchase_order.created")
        assert purchase.data.quantity == 42
        decided = (await client.get("/suggestions", params={"status": "approved"})).json()
        assert [s["id"] for s in decided] == ["rec-1"]
        assert (await client.get("/suggestions", params={"status": "pending"})).json() == []
        # Empty filters, as the contract writes the query, mean any.
        everything = (await client.get("/suggestions?status=&agent=")).json()
        assert [s["id"] for s in everything] == ["rec-1"]
        theirs = await client.get("/suggestions", params={"agent": "restock-agent"})
        assert [s["agent"] for s in theirs.json()] == ["restock-agent"]
        assert (await client.get("/suggestions", params={"agent": "nobody"})).json() == []
    # Decided in the console's database, the one owner of decisions, with its audit log.
    audit = await shop.api.decisions.database.read(_audit)
    assert [row[:2] for row in audit] == [("approved", "rec-1"), ("decision_refused", "rec-1")]


async def test_one_key_sent_twice_at_once_decides_once_and_answers_both_alike(
    shop: ApiShop,
) -> None:
    """A client retrying a decision it has no answer for yet: the key, the decision and
    its event commit together, so the copy gets the first one's answer, not a 409."""
    await shop.shop.publish([restock_suggestion(7)])
    body = {"quantity": 12, "note": "retried"}
    async with shop.client() as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/suggestions/rec-7/approve", json=body, headers={"Idempotency-Key": "same"}
                )
                for _ in range(4)
            )
        )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1
    await shop.settle()
    [decision] = shop.shop.of_type("restock.approved")
    assert decision.id == answers[0].json()["event_id"]


async def test_a_substitute_suggestion_is_accepted_with_a_substitute_it_offered(
    shop: ApiShop,
) -> None:
    await shop.shop.publish([substitute_suggestion(1), substitute_suggestion(2)])
    async with shop.client() as client:
        offered_not = await client.post(
            "/suggestions/sub-1/approve", json={"sku": "SKU-Z"}, headers={"Idempotency-Key": "s"}
        )
        assert "not among" in is_problem(offered_not, 422)["detail"]
        not_allowed = await client.post(
            "/suggestions/sub-1/approve", json={"quantity": 3}, headers={"Idempotency-Key": "s"}
        )
        assert "may not change quantity" in is_problem(not_allowed, 422)["detail"]
        accepted = await client.post(
            "/suggestions/sub-1/approve", json={"sku": "SKU-C"}, headers={"Idempotency-Key": "s"}
        )
        assert accepted.status_code == 200, accepted.text
        again = await client.post(
            "/suggestions/sub-1/reject", json={"reason": "no"}, headers={"Idempotency-Key": "t"}
        )
        is_problem(again, 409)
        dismissed = await client.post(
            "/suggestions/sub-2/reject",
            json={"reason": "refund instead"},
            headers={"Idempotency-Key": "u"},
        )
        assert dismissed.json()["event_type"] == "substitute.dismissed"
    await shop.settle()
    [accept] = shop.shop.of_type("substitute.accepted")
    assert (accept.data.suggestion_id, accept.data.sku, accept.data.order_id) == (
        "sub-1",
        "SKU-C",
        "order-1",
    )
    [dismiss] = shop.shop.of_type("substitute.dismissed")
    assert (dismiss.data.suggestion_id, dismiss.data.reason) == ("sub-2", "refund instead")


async def test_the_document_is_openapi_3_1_with_problems_and_the_bearer_scheme(
    shop: ApiShop,
) -> None:
    async with shop.client(token=None) as client:
        document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operation = document["paths"]["/orders"]["post"]
    assert operation["security"] == [{"bearer": []}]
    for status in ("400", "401", "409", "422"):
        assert "application/problem+json" in operation["responses"][status]["content"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def _audit(connection: Any) -> list[tuple[str, str | None]]:
    import sqlalchemy as sa

    from consumers.review.readmodel import audit

    rows = connection.execute(sa.select(audit.c.action, audit.c.target).order_by(audit.c.seq))
    return [(row.action, row.target) for row in rows]
