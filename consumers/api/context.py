"""What the routes share: the running service's parts and the parameters they take."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, Path

from agentbus.envelope import EventCodec
from agentbus.store import Database
from consumers.api.auth import Tokens
from consumers.api.idempotency import HEADER
from consumers.review.deciding import Reviewing

# Keys in paths and queries: as the catalog's ids, without control characters.
KEY_PATTERN = r"^[^\x00-\x1f\x7f]+$"
OrderId = Annotated[str, Path(min_length=1, max_length=200, pattern=KEY_PATTERN)]
SkuPath = Annotated[str, Path(min_length=1, max_length=100, pattern=KEY_PATTERN)]
SuggestionId = Annotated[str, Path(min_length=1, max_length=200, pattern=KEY_PATTERN)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Required on every write: the same key and body answer the same again.",
    ),
]


@dataclass
class ApiContext:
    """What the routes need from the running service."""

    database: Callable[[], Database]
    wake_relay: Callable[[], None]
    codec: EventCodec
    tokens: Tokens
    reviewing: Reviewing
    ready: Callable[[], Awaitable[None]]
    # The console's database, where suggestions are decided (decision_store.py).
    decisions: Callable[[], Database]
    wake_decisions: Callable[[], None]
