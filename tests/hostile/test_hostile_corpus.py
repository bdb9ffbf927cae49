"""The hostile corpus (corpus.py) through every service of the shop at once.

All services run for real on the in-process broker with SQLite: inventory,
orders, payments, notifications, purchasing, memory, both agents and the review
console. Between hostile messages a valid event goes through; at the end every
one of them must have been applied, every hostile message must be dead-lettered
with its precise reason by each service that received it (or, for text that is
merely hostile, handled as plain data), and every service must still consume.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from agentbus.deadletters import DeadLetter, list_dead_letters
from agentbus.envelope import new_event
from agentbus.store import open_database
from agents.registry import restock_agent, substitute_agent
from consumers import inventory, memory, notifications, orders, payments, purchasing
from consumers.review import ReviewConsole
from consumers.review.auth import AuthConfig, hash_password
from events import CATALOG, StockReceived
from tests.agents.harness import Shop, product
from tests.hostile.corpus import INJECTION, SCRIPT, SQL, corpus

PASSWORD = "a long enough password"


def control(n: int) -> Any:
    return new_event(StockReceived(sku="CONTROL", quantity=1), source="/tests", id=f"control-{n}")


async def sign_in(base: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30)
    page = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    done = await client.post(
        "/login", data={"user": "ana", "password": PASSWORD, "csrf": token.group(1), "next": "/"}
    )
    assert done.status_code == 303
    return client


async def test_hostile_messages_are_refused_precisely_and_nothing_else_suffers(
    tmp_path: Path,
) -> None:
    cases = corpus()
    assert len(cases) >= 50
    review = ReviewConsole(
        AuthConfig(users={"ana": hash_password(PASSWORD)}, secure_cookies=False), port=0
    )
    services = [
        inventory.build(),
        orders.build(),
        payments.build(),
        notifications.build(),
        purchasing.build(),
        memory.build(),
        restock_agent(),
        substitute_agent(),
        review.service,
    ]
    async with Shop(tmp_path, services) as shop:
        await shop.publish([product("CONTROL")])
        for n, case in enumerate(cases):
            await shop.transport.publish_many(list(case.messages))
            await shop.publish([control(n)])
        queues = [consumer.queue for consumer in shop.host.consumers]
        letters = await list_dead_letters(shop.transport, queues)
        # Still consuming after all of it: one more valid event goes through.
        await shop.publish([control(len(cases))])
        client = await sign_in(f"http://127.0.0.1:{review.port}")
        try:
            pages = {
                path: (await client.get(path)).text
                for path in ("/?status=", "/suggestions/inj-rec", "/history", "/audit")
            }
        finally:
            await client.aclose()
    assert all(consumer.in_flight == 0 for consumer in shop.host.consumers)

    by_message: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_message.setdefault(letter.event_id or "", []).append(letter)
    for case in cases:
        found = by_message.get(case.messages[0].message_id or "", [])
        if case.reason is None:
            assert found == [], f"{case.name} should have been handled, not dead-lettered: {found}"
        elif "domain" in case.checks:
            assert [(x.queue, x.error_code) for x in found] == [("inventory", case.reason)], (
                case.name,
                found,
            )
        else:
            assert found, f"{case.name}: no service dead-lettered it"
            assert {x.error_code for x in found} == {case.reason}, (case.name, found)
            assert all(x.detail for x in found), f"{case.name}: a dead letter without a reason"

    state = await read_inventory(tmp_path)
    assert state["CONTROL"]["on_hand"] == len(cases) + 1, "valid traffic in between was unaffected"
    assert state["REUSED"]["on_hand"] == 5, "an id reused with other content changed nothing"
    assert SQL in state, "SQL in a SKU is stored as the text it is"

    for path, page in pages.items():
        assert SCRIPT not in page, f"{path} rendered event text as HTML"
    assert "&lt;script&gt;" in pages["/suggestions/inj-rec"]
    assert INJECTION[:40] in pages["/suggestions/inj-rec"], "text shown as text"

    made = [s for s in shop.of_type("restock.recommended") if s.source.startswith("/services/")]
    # The largest max stock here is 40 (CONTROL); the cap is three times it.
    assert all(0 < s.data.quantity <= 3 * 40 for s in made), "agents stayed within bounds"


async def read_inventory(data: Path) -> dict[str, Any]:
    from agentbus.envelope import EventCodec

    database = open_database("inventory", EventCodec(CATALOG), url=None, data_dir=data)
    try:
        return await database.read(lambda c: inventory.read_state(c))
    finally:
        await database.close()
