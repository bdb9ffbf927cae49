"""The review console over HTTP: sign-in, CSRF, decisions that become events, races.

The console runs as the real service on the in-process broker with SQLite,
beside the real purchasing service; requests go over a real socket with httpx.
Suggestions are published as events, as an agent would publish them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from agentbus.envelope import Event, new_event
from agentbus.errors import ConfigurationError
from consumers import purchasing
from consumers.review import ReviewConsole
from consumers.review.auth import AuthConfig, hash_password
from consumers.review.signing import SignatureInvalid, verify
from events import RestockRecommended
from tests.agents.harness import Shop, product
from tests.api.shop import substitute_suggestion

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a shared webhook key of 32 bytes").decode()
PASSWORDS = {"alice": "correct horse battery", "bob": "staple of the batteries"}
TOKEN = "token-for-scripts-0123456789"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def auth(secure: bool = False) -> AuthConfig:
    users = {name: hash_password(password) for name, password in PASSWORDS.items()}
    return AuthConfig(users=users, token=TOKEN, secret="test-secret-key", secure_cookies=secure)


def suggestion(n: int, sku: str = "SKU-A", rationale: str = "Cover the lead time.") -> Event[Any]:
    return new_event(
        RestockRecommended(
            recommendation_id=f"rec-{n}",
            sku=sku,
            quantity=30,
            urgency="high",
            rationale=rationale,
            evidence=[],
            confidence=0.8,
            agent="restock-agent",
            model="policy",
            prompt_version="restock/v1",
            trigger_event_id=f"low-{n}",
        ),
        source="/services/restock-agent",
        id=f"suggestion-{n}",
    )


class Browserless:
    """A signed-in (or not) user agent: httpx with its own cookies."""

    def __init__(self, base: str) -> None:
        self.client = httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=30)

    async def csrf(self, path: str = "/login") -> str:
        page = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text[:500]
        return found.group(1)

    async def sign_in(self, user: str, password: str) -> httpx.Response:
        token = await self.csrf()
        return await self.client.post(
            "/login", data={"user": user, "password": password, "csrf": token, "next": "/"}
        )

    async def decide(self, suggestion_id: str, verb: str, **form: str) -> httpx.Response:
        token = await self.csrf(f"/suggestions/{suggestion_id}")
        return await self.client.post(
            f"/suggestions/{suggestion_id}/{verb}", data={"csrf": token, **form}
        )


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[Shop, ReviewConsole]]:
    review = ReviewConsole(auth(), port=0)
    async with Shop(tmp_path, [review.service, purchasing.build()]) as shop:
        await shop.publish([product("SKU-A"), product("SKU-B")])
        yield shop, review


def base(review: ReviewConsole) -> str:
    return f"http://127.0.0.1:{review.port}"


async def test_pages_need_a_session_and_actions_a_csrf_token(
    console: tuple[Shop, ReviewConsole],
) -> None:
    shop, review = console
    await shop.publish([suggestion(1)])
    anonymous = Browserless(base(review))
    for path in ("/", "/history", "/audit", "/suggestions/rec-1", "/stream"):
        response = await anonymous.client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    refused = await anonymous.client.post("/suggestions/rec-1/approve", data={"quantity": "5"})
    assert refused.status_code == 401

    wrong = await anonymous.sign_in("alice", "not her password")
    assert wrong.status_code == 401
    assert "Wrong name or password" in wrong.text
    assert (await anonymous.client.get("/")).status_code == 303

    alice = Browserless(base(review))
    assert (await alice.sign_in("alice", PASSWORDS["alice"])).status_code == 303
    assert (await alice.client.get("/")).status_code == 200
    missing = await alice.client.post("/suggestions/rec-1/approve", data={"quantity": "5"})
    assert missing.status_code == 403
    forged = await alice.client.post(
        "/suggestions/rec-1/approve", data={"quantity": "5", "csrf": "forged"}
    )
    assert forged.status_code == 403
    assert shop.of_type("restock.approved") == []
    audit = (await alice.client.get("/audit")).text
    assert "csrf_refused" in audit
    assert "sign_in_failed" in audit

    scripted = Browserless(base(review))
    assert (await scripted.sign_in("token", TOKEN)).status_code == 303
    assert (await scripted.client.get("/")).status_code == 200


async def test_an_approval_with_an_edited_quantity_becomes_one_purchase_order(
    console: tuple[Shop, ReviewConsole],
) -> None:
    shop, review = console
    await shop.publish([suggestion(1)])
    alice = Browserless(base(review))
    await alice.sign_in("alice", PASSWORDS["alice"])
    listing = (await alice.client.get("/")).text
    assert "rec-1" in listing

    done = await alice.decide("rec-1", "approve", quantity="42", note="supplier minimum")
    assert done.status_code == 303
    await shop.host.settle(interval=0.02, stable=3, timeout=30)
    [approved] = shop.of_type("restock.approved")
    assert (approved.data.quantity, approved.data.reviewer) == (42, "alice")
    assert approved.data.note == "supplier minimum"
    assert approved.causationid == "suggestion-1"
    [purchase] = shop.of_type("purchase_order.created")
    assert purchase.data.quantity == 42
    assert purchase.data.recommendation_id == "rec-1"

    page = (await alice.client.get("/suggestions/rec-1")).text
    assert "approved by alice" in page
    assert "purchase order" in page
    again = await alice.decide("rec-1", "approve", quantity="1")
    assert again.status_code == 409
    await shop.host.settle(interval=0.02, stable=3, timeout=30)
    assert len(shop.of_type("restock.approved")) == 1
    history = (await alice.client.get("/history")).text
    assert purchase.data.purchase_order_id in history


async def test_a_substitute_suggestion_is_accepted_in_the_browser_once(
    console: tuple[Shop, ReviewConsole],
) -> None:
    shop, review = console
    await shop.publish([substitute_suggestion(1)])
    alice = Browserless(base(review))
    await alice.sign_in("alice", PASSWORDS["alice"])
    page = (await alice.client.get("/suggestions/sub-1")).text
    assert 'name="sku"' in page
    assert 'name="quantity"' not in page
    not_offered = await alice.decide("sub-1", "approve", sku="SKU-Z")
    assert not_offered.status_code == 422
    assert "not among the substitutes" in not_offered.text
    done = await alice.decide("sub-1", "approve", sku="SKU-C", note="the customer agreed")
    assert done.status_code == 303, done.text
    again = await alice.decide("sub-1", "reject", reason="changed my mind")
    assert again.status_code == 409
    await shop.host.settle(interval=0.02, stable=3, timeout=30)
    [accepted] = shop.of_type("substitute.accepted")
    assert (accepted.data.suggestion_id, accepted.data.sku, accepted.data.reviewer) == (
        "sub-1",
        "SKU-C",
        "alice",
    )
    assert accepted.causationid == "substitute-suggestion-1"
    assert shop.of_type("substitute.dismissed") == []
    audit = (await alice.client.get("/audit")).text
    assert "decision_refused" in audit


async def test_two_reviewers_at_the_same_moment_make_one_decision(
    console: tuple[Shop, ReviewConsole],
) -> None:
    shop, review = console
    await shop.publish([suggestion(1)])
    alice, bob = Browserless(base(review)), Browserless(base(review))
    await alice.sign_in("alice", PASSWORDS["alice"])
    await bob.sign_in("bob", PASSWORDS["bob"])
    tokens = [await alice.csrf("/suggestions/rec-1"), await bob.csrf("/suggestions/rec-1")]

    arrived = 0
    both = asyncio.Event()

    async def collide() -> None:
        # Both requests have read the suggestion as pending before either commits.
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 10)

    assert review.console is not None
    review.console.before_decision = collide
    answers = await asyncio.gather(
        alice.client.post("/suggestions/rec-1/approve", data={"csrf": tokens[0], "quantity": "10"}),
        bob.client.post("/suggestions/rec-1/approve", data={"csrf": tokens[1], "quantity": "20"}),
    )
    assert sorted(a.status_code for a in answers) == [303, 409]
    await shop.host.settle(interval=0.02, stable=3, timeout=30)
    [approved] = shop.of_type("restock.approved")
    assert len(shop.of_type("purchase_order.created")) == 1
    winner = "alice" if answers[0].status_code == 303 else "bob"
    assert approved.data.reviewer == winner


async def test_a_rejection_needs_a_reason_and_says_it(console: tuple[Shop, ReviewConsole]) -> None:
    shop, review = console
    await shop.publish([suggestion(2, "SKU-B")])
    bob = Browserless(base(review))
    await bob.sign_in("bob", PASSWORDS["bob"])
    blank = await bob.decide("rec-2", "reject", reason="  ")
    assert blank.status_code == 422
    assert "say why" in blank.text
    done = await bob.decide("rec-2", "reject", reason="discontinued next month")
    assert done.status_code == 303
    await shop.host.settle(interval=0.02, stable=3, timeout=30)
    [rejected] = shop.of_type("restock.rejected")
    assert (rejected.data.reason, rejected.data.reviewer) == ("discontinued next month", "bob")
    assert shop.of_type("purchase_order.created") == []


async def test_text_from_events_is_escaped_and_secrets_stay_out(
    console: tuple[Shop, ReviewConsole], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shop, review = console
    await shop.publish([suggestion(3, rationale=HOSTILE)])
    alice = Browserless(base(review))
    await alice.sign_in("alice", PASSWORDS["alice"])
    pages = [(await alice.client.get(p)).text for p in ("/", "/suggestions/rec-3", "/audit")]
    assert HOSTILE not in pages[1]
    assert "&lt;script&gt;" in pages[1]
    for text in [*pages, caplog.text]:
        assert TOKEN not in text
        assert PASSWORDS["alice"] not in text
        assert "$argon2id$" not in text
    headers = (await alice.client.get("/")).headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


async def test_session_cookies_are_secure_http_only_and_same_site(tmp_path: Path) -> None:
    review = ReviewConsole(auth(secure=True), port=0)
    async with Shop(tmp_path, [review.service]), httpx.AsyncClient(base_url=base(review)) as client:
        page = await client.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" in cookie


class Hook:
    """A Slack-compatible webhook receiver (a fake: the real thing is Slack)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, Any], str | None]] = []
        self.signed: list[tuple[dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((json.loads(body), self.headers.get("Idempotency-Key")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                hook.signed.append((headers, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


async def test_each_new_suggestion_is_announced_once_on_the_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Hook()
    monkeypatch.setenv("REVIEW_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("REVIEW_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("REVIEW_PUBLIC_URL", "https://review.example.com")
    review = ReviewConsole(auth(), port=0)
    try:
        async with Shop(tmp_path, [review.service]) as shop:
            first = suggestion(4)
            await shop.publish([first, first, suggestion(5)])
            async with asyncio.timeout(10):
                while len(hook.posts) < 2:  # noqa: ASYNC110 - another thread fills it
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
    finally:
        hook.server.shutdown()
    assert sorted(key or "" for _, key in hook.posts) == ["rec-4", "rec-5"]
    text = hook.posts[0][0]["text"]
    assert "restock 30 x SKU-A" in text
    assert "https://review.example.com/suggestions/rec-" in text
    for headers, body in hook.signed:
        verify(WEBHOOK_SECRET, headers, body)  # the receiver's check, as documented
        # and the reference implementation's, from the secret as it is
        assert Webhook(WEBHOOK_SECRET).verify(body, headers) == json.loads(body)
        assert headers["webhook-id"] == headers["idempotency-key"]
        with pytest.raises(SignatureInvalid):
            verify(WEBHOOK_SECRET, headers, body.replace(b"SKU-A", b"SKU-Z"))
        with pytest.raises(SignatureInvalid):
            verify("whsec_" + base64.b64encode(b"another key").decode(), headers, body)
        with pytest.raises(SignatureInvalid):
            verify(WEBHOOK_SECRET, headers, body, now=int(headers["webhook-timestamp"]) + 301)


async def test_a_webhook_without_a_secret_to_sign_with_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEW_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.delenv("REVIEW_WEBHOOK_SECRET", raising=False)
    review = ReviewConsole(auth(), port=0)
    with pytest.raises(ConfigurationError, match="REVIEW_WEBHOOK_SECRET"):
        async with Shop(tmp_path, [review.service]):
            pass
