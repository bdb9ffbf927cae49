"""Idempotent writes: the key, the resource and its event in one transaction.

A key belongs to one client. Its first request is answered and the answer kept
with the key; the same request again gets that answer and changes nothing; another
request under the same key is refused (409). Errors are not kept: the same key
may be tried again once what was wrong (an unknown SKU) is put right.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from agentbus.envelope import Event
from agentbus.store import Database, Transaction
from consumers.api.problems import ProblemError
from consumers.api.projections import APPLIERS
from consumers.api.tables import NAME, idempotency

HEADER = "Idempotency-Key"
# Visible ASCII: a key is echoed in logs and compared byte for byte.
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


Work = Callable[[Transaction], Answer]


def checked_key(key: str | None) -> str:
    if key is None or not key:
        raise ProblemError(400, f"a write needs an {HEADER} header (a unique string per request)")
    if not _KEY.match(key):
        raise ProblemError(400, f"{HEADER} must be 1 to 200 visible ASCII characters")
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def run_once(database: Database, client: str, key: str, print_: str, work: Work) -> Answer:
    """`work(tx)` under the key, or the answer the key already has."""

    def unit(tx: Transaction) -> Answer:
        found = tx.execute(
            sa.select(idempotency.c.fingerprint, idempotency.c.status, idempotency.c.body).where(
                idempotency.c.client == client, idempotency.c.key == key
            )
        ).first()
        if found is not None:
            if found.fingerprint != print_:
                raise ProblemError(
                    409, f"this {HEADER} was used for another request; use a new key"
                )
            return Answer(found.status, dict(found.body), replayed=True)
        answer = work(tx)
        if answer.status >= 400:
            return answer  # a refusal that still commits (an audit row), kept under no key
        tx.execute(
            sa.insert(idempotency).values(
                client=client,
                key=key,
                fingerprint=print_,
                status=answer.status,
                body=answer.body,
                created_at=datetime.now(UTC),
            )
        )
        return answer

    try:
        return await database.run(unit)
    except sa.exc.IntegrityError:
        # The same key committed by a concurrent request in the meantime: its answer
        # (or its 409) is ours now.
        return await database.run(unit)


def emit(tx: Transaction, event: Event[Any]) -> None:
    """Stage an event of the API's own, applied here at once and marked as seen, so
    that its copy coming back from the broker changes nothing."""
    tx.claim(NAME, [event.id])
    apply = APPLIERS.get(event.type)
    if apply is not None:
        apply(tx, event)
    tx.stage([event])
