"""A reviewer in a real browser (Debian's Chromium through Playwright), over RabbitMQ.

The restock agent, purchasing and the review console run as `agentbus run`
processes. The reviewer signs in, watches a suggestion appear without reloading,
edits its quantity and approves; `restock.approved` and then
`purchase_order.created` must cross the broker. A second suggestion is rejected
with a reason, and a substitute agent's suggestion accepted with the substitute
chosen. Every page is checked with axe-core (labels, contrast and the rest
of its rules) at desktop and phone width. Screenshots go to `.artifacts/review/`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from agentbus.bus import Bus
from agentbus.envelope import Event, EventCodec
from agentbus.transport.rabbitmq import RabbitTransport
from consumers.review.auth import hash_password
from events import CATALOG
from tests.api.shop import substitute_suggestion
from tests.integration.chaos import ServiceProcess, exclusive_queues
from tests.support.broker import delete_queues, low, product

pytestmark = pytest.mark.rabbitmq

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "review"
SERVICES = ("restock-agent", "purchasing", "review")
OBSERVER = "test.review-browser.decisions"
PASSWORD = "a long enough password"
PHONE = {"width": 390, "height": 844}


def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


async def accessible(page: Any, label: str) -> None:
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    found = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]
    assert not found, f"{label}: {found}"
    fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert fits, f"{label}: the page scrolls sideways"


async def test_a_reviewer_approves_and_rejects_in_the_browser(
    amqp_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    executable = chromium()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    exchange = f"agentbus.test.{uuid.uuid4().hex[:10]}"
    port = 18000 + uuid.uuid4().int % 2000
    async with exclusive_queues():
        await delete_queues(amqp_url, (*SERVICES, OBSERVER))
        env = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "AGENTBUS_EXCHANGE": exchange,
            "AGENTBUS_DATA": str(tmp_path / "data"),
            "AGENTBUS_QUEUE_TYPE": "classic",
            "AGENTBUS_MODEL": "policy",
            "REVIEW_USERS": f"dana:{hash_password(PASSWORD)}",
            "REVIEW_SECRET": "browser-test-secret",
            "REVIEW_PORT": str(port),
        }
        processes = [ServiceProcess(name, env) for name in SERVICES]
        transport = RabbitTransport(amqp_url, exchange=exchange, connection_name="test")
        bus = Bus(transport, EventCodec(CATALOG))
        seen: list[Event[Any]] = []
        try:
            await asyncio.gather(*(p.start() for p in processes))
            await transport.start()
            connection = await aio_pika.connect(amqp_url)
            channel = await connection.channel()
            queue = await channel.declare_queue(OBSERVER, auto_delete=True)
            for key in ("restock.*", "purchase_order.created", "substitute.*"):
                await queue.bind(exchange, routing_key=key)

            async def observe(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    seen.append(bus.codec.decode(message.body))

            await queue.consume(observe)
            await bus.publish_many([product("SKU-KETTLE"), product("SKU-TOASTER")])

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(executable), args=["--no-sandbox"]
                )
                page = await browser.new_page()
                site = f"http://127.0.0.1:{port}"
                await page.goto(f"{site}/")
                await expect(page).to_have_url(f"{site}/login?next=/")
                await accessible(page, "sign-in")
                await page.get_by_label("Name").fill("dana")
                await page.get_by_label("Password or access token").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.get_by_role("heading", name="Suggestions")).to_be_visible()
                await page.screenshot(path=str(ARTIFACTS / "1-empty.png"), full_page=True)

                # The agent suggests while the page is open: it appears without a reload.
                await bus.publish(low("SKU-KETTLE"))
                row = page.get_by_role("link", name="SKU-KETTLE")
                await expect(row).to_be_visible(timeout=30_000)
                await page.screenshot(path=str(ARTIFACTS / "2-suggestion-arrived.png"))
                await accessible(page, "suggestions")

                await row.click()
                await expect(
                    page.get_by_role("heading", name="Restock: SKU-KETTLE")
                ).to_be_visible()
                await accessible(page, "suggestion")
                await page.get_by_label("Quantity to order").fill("77")
                await page.get_by_label("Note (optional)").fill("pallet size")
                await page.screenshot(path=str(ARTIFACTS / "3-approving.png"), full_page=True)
                await page.get_by_role("button", name="Approve").click()
                await expect(page.get_by_role("status")).to_have_text("Suggestion approved.")
                await expect(page.locator("#status")).to_contain_text("approved by dana")

                async with asyncio.timeout(30):
                    while not any(e.type == "purchase_order.created" for e in seen):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                await page.reload()
                await expect(page.get_by_text("purchase order", exact=True)).to_be_visible()
                await page.screenshot(path=str(ARTIFACTS / "4-approved.png"), full_page=True)

                await bus.publish(low("SKU-TOASTER"))
                await page.goto(f"{site}/")
                other = page.get_by_role("link", name="SKU-TOASTER")
                await expect(other).to_be_visible(timeout=30_000)
                await other.click()
                await page.get_by_label("Reason for rejecting").fill("end of line, do not reorder")
                await page.get_by_role("button", name="Reject").click()
                await expect(page.locator("#status")).to_contain_text("rejected by dana")
                await page.screenshot(path=str(ARTIFACTS / "5-rejected.png"), full_page=True)

                # Another agent's suggestion is decided the same way, with its own choice.
                await bus.publish(substitute_suggestion(1))
                await page.goto(f"{site}/")
                offered = page.get_by_role("link", name="SKU-A")
                await expect(offered).to_be_visible(timeout=30_000)
                await offered.click()
                await expect(page.get_by_role("heading", name="Substitutes: SKU-A")).to_be_visible()
                await accessible(page, "substitute suggestion")
                await page.get_by_label("Substitute to offer").select_option("SKU-C")
                await page.get_by_role("button", name="Approve").click()
                await expect(page.locator("#status")).to_contain_text("approved by dana")

                phone = await browser.new_page(viewport=PHONE)
                await phone.context.add_cookies(await page.context.cookies())
                for path, label in (("/", "phone list"), ("/history", "phone decisions")):
                    await phone.goto(f"{site}{path}")
                    await accessible(phone, label)
                await phone.goto(f"{site}/?status=")
                await phone.get_by_role("link", name="SKU-KETTLE").click()
                await accessible(phone, "phone suggestion")
                await phone.screenshot(path=str(ARTIFACTS / "6-phone.png"), full_page=True)
                await browser.close()

            async with asyncio.timeout(30):
                while not {"restock.rejected", "substitute.accepted"} <= {e.type for e in seen}:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await connection.close()
        finally:
            codes = await asyncio.gather(*(p.stop() for p in processes))
            await transport.close()
            await delete_queues(amqp_url, (*SERVICES, OBSERVER))
            async with await aio_pika.connect(amqp_url) as admin:
                await (await admin.channel()).exchange_delete(exchange)
    assert codes == [0, 0, 0], [p.stderr() for p in processes]

    types = [e.type for e in seen]
    approved = next(e for e in seen if e.type == "restock.approved")
    purchase = next(e for e in seen if e.type == "purchase_order.created")
    assert types.index("restock.approved") < types.index("purchase_order.created")
    assert (approved.data.sku, approved.data.quantity, approved.data.reviewer) == (
        "SKU-KETTLE",
        77,
        "dana",
    )
    assert approved.data.note == "pallet size"
    assert (purchase.data.quantity, purchase.data.recommendation_id) == (
        77,
        approved.data.recommendation_id,
    )
    [rejected] = [e for e in seen if e.type == "restock.rejected"]
    assert (rejected.data.sku, rejected.data.reason) == (
        "SKU-TOASTER",
        "end of line, do not reorder",
    )
    assert types.count("restock.approved") == 1
    assert types.count("purchase_order.created") == 1
    [accepted] = [e for e in seen if e.type == "substitute.accepted"]
    assert (accepted.data.suggestion_id, accepted.data.sku, accepted.data.reviewer) == (
        "sub-1",
        "SKU-C",
        "dana",
    )
    for shot in (
        "1-empty",
        "2-suggestion-arrived",
        "3-approving",
        "4-approved",
        "5-rejected",
        "6-phone",
    ):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 0
