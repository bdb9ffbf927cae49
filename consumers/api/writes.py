"""A write's path: its key checked, its work done once in a transaction, its answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel

from agentbus.envelope import Event, derived_id, new_event
from agentbus.store import Transaction
from agentbus.telemetry import current_traceparent
from consumers.api.context import ApiContext
from consumers.api.idempotency import Answer, checked_key, fingerprint, run_once
from consumers.api.problems import PROBLEM_JSON, TITLES, Problem
from consumers.api.tables import NAME

SOURCE = f"/services/{NAME}"


@dataclass(frozen=True)
class Writing:
    """Who writes under which key, in which request's span."""

    client: str
    key: str
    span: Span

    def traced(self, event: Event[Any]) -> Event[Any]:
        """The event, carrying the request's span as its traceparent."""
        with trace.use_span(self.span, end_on_exit=False):
            traceparent = current_traceparent()
        if traceparent is None:
            return event
        return event.model_copy(update={"traceparent": traceparent})

    def event(self, data: BaseModel) -> Event[Any]:
        """A new event of the API's, its id derived from the client and the key."""
        event_type: str = getattr(data, "event_type")  # noqa: B009 - a catalog ClassVar
        made = new_event(
            data, source=SOURCE, id=derived_id(NAME, self.client, self.key, event_type)
        )
        return self.traced(made)


Work = Callable[[Transaction, Writing], Answer]


async def write(
    api: ApiContext, request: Request, key: str | None, body: BaseModel | None, work: Work
) -> JSONResponse:
    checked = checked_key(key)
    # Taken here: the work runs in the database's thread, outside the request's context.
    writing = Writing(request.state.client, checked, trace.get_current_span())
    dumped = None if body is None else body.model_dump(mode="json")
    print_ = fingerprint(request.method, request.url.path, dumped)
    answer = await run_once(
        api.database(), writing.client, checked, print_, lambda tx: work(tx, writing)
    )
    if not answer.replayed:
        api.wake_relay()
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    media_type = PROBLEM_JSON if answer.status >= 400 else None
    return JSONResponse(
        answer.body, status_code=answer.status, headers=headers, media_type=media_type
    )


def refused(detail: str) -> Answer:
    """A 409 that still commits what the work did (an audit row)."""
    body = Problem(title=TITLES[409], status=409, detail=detail)
    return Answer(409, body.model_dump(mode="json", exclude_none=True))
