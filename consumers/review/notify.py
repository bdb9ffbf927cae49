"""Telling people about new suggestions: a Slack-compatible webhook, at most once each.

A notice row is written in the transaction that records the suggestion, so a
redelivered suggestion writes none. The sender posts each due notice with an
`Idempotency-Key` (the suggestion id) and marks it sent; a failed post is tried
again later, with backoff, up to `MAX_ATTEMPTS`. Posts are signed (Standard
Webhooks, `consumers.review.signing`), so a receiver can tell them from forgeries.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from agentbus.errors import AgentbusError
from agentbus.store import Database, Transaction
from agentbus.wake_loop import Round, WakeLoop
from consumers.review.readmodel import notices
from consumers.review.signing import key_of, sign

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8


def notice_text(kind: str, data: Any, link: str) -> str:
    if kind == "restock":
        what = f"restock {data.quantity} x {data.sku} ({data.urgency} urgency)"
    else:
        what = f"substitutes for {data.sku} in order {data.order_id}"
    return f"New suggestion from {data.agent}: {what}. Review: {link}"


class WebhookSender:
    def __init__(self, database: Database, url: str, secret: str, *, timeout: float = 10.0) -> None:
        key_of(secret)  # a secret that cannot sign is said at start, not at the first post
        self.database = database
        self.url = url
        self.secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)
        self._loop = WakeLoop(
            self._round,
            name="review webhook",
            idle=30.0,
            backoff=2.0,
            max_backoff=60.0,
            retry_on=(AgentbusError, OSError, sa.exc.SQLAlchemyError),
            on_stop="cancel",  # a receiver that hangs must not hold the console's shutdown
        )
        self.sent = 0

    def wake(self) -> None:
        self._loop.wake()

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self._client.aclose()

    async def _round(self) -> Round:
        return Round.FAILED if await self.send_due() else Round.DONE

    async def send_due(self) -> int:
        """Post what is due; returns how many posts failed."""

        def due(connection: sa.Connection) -> list[Any]:
            query = (
                sa.select(notices.c.suggestion_id, notices.c.text)
                .where(notices.c.sent_at.is_(None), notices.c.attempts < MAX_ATTEMPTS)
                .order_by(notices.c.created_at)
                .limit(50)
            )
            return list(connection.execute(query).all())

        failed = 0
        for row in await self.database.read(due):
            try:
                # Signed as sent: the receiver checks these very bytes.
                body = json.dumps({"text": row.text}, separators=(",", ":")).encode()
                headers = {
                    "Content-Type": "application/json",
                    "Idempotency-Key": row.suggestion_id,
                    **sign(self.secret, str(row.suggestion_id), body),
                }
                response = await self._client.post(self.url, content=body, headers=headers)
                ok = response.is_success
            except httpx.HTTPError as exc:
                log.warning("review webhook: %s", type(exc).__name__)
                ok = False
            key = str(row.suggestion_id)

            def mark(tx: Transaction, key: str = key, done: bool = ok) -> None:
                _mark(tx.connection, key, done)

            await self.database.run(mark)
            if ok:
                self.sent += 1
            else:
                failed += 1
        return failed


def _mark(connection: sa.Connection, suggestion_id: str, ok: bool) -> None:
    values: dict[str, Any] = {"attempts": notices.c.attempts + 1}
    if ok:
        values["sent_at"] = datetime.now(UTC)
    connection.execute(
        sa.update(notices).where(notices.c.suggestion_id == suggestion_id).values(**values)
    )
