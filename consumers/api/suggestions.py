"""Every agent's suggestions: listed, approved and rejected by the agents' declarations.

A decision is the console's (`consumers.review.deciding`), made in the console's
database (`decision_store.py`), whichever door it comes through: one conditional
update, one decision event through that database's outbox, an audit row in its log;
the second decision, from the console or the API, is refused (here a 409) with its
audit row too. The request's idempotency key commits there with its decision.
"""

# No postponed annotations here: FastAPI reads the approval body's model, which is
# built at run time from the agents' declarations, from the route's annotations.
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel

from agentbus.envelope import Event
from agentbus.store import Transaction
from agentbus.telemetry import extract_context
from consumers.api import schemas
from consumers.api.context import ApiContext, IdempotencyKey, SuggestionId
from consumers.api.idempotency import Answer, checked_key, fingerprint, run_once
from consumers.api.problems import PROBLEM_JSON, ProblemError, documented
from consumers.api.tables import NAME
from consumers.api.writes import Writing, refused
from consumers.review import deciding, readmodel
from consumers.review.deciding import DecisionInvalid

ANY_KEY = r"^[^\x00-\x1f\x7f]*$"


def router(api: ApiContext) -> APIRouter:
    routes = APIRouter(tags=["suggestions"])
    Approval = schemas.approval_request(api.reviewing.decisions)

    @routes.get(
        "/suggestions",
        response_model=list[schemas.SuggestionView],
        responses=documented(401, 422),
    )
    async def list_suggestions(
        # Empty means any, as in `?status=&agent=`.
        status: Literal["pending", "approved", "rejected", ""] | None = None,
        agent: Annotated[str | None, Query(max_length=200, pattern=ANY_KEY)] = None,
    ) -> list[schemas.SuggestionView]:
        """Every agent's suggestions seen, newest first, with their review status;
        `status` and `agent` filter when given."""
        filters = readmodel.Filters(status=status or "", agent=agent or "")
        rows = await api.database().read(lambda c: readmodel.listing(c, filters))
        return [
            schemas.SuggestionView(
                id=row["suggestion_id"],
                agent=row["agent"],
                type=row["type"] or "",
                subject=row["subject"],
                status=row["status"],
                data=row["data"],
                trace_id=row["trace_id"],
            )
            for row in rows
        ]

    async def decide(
        request: Request,
        suggestion_id: str,
        verb: str,
        body: BaseModel,
        key: str | None,
        text: str | None,
        changes: dict[str, Any],
    ) -> JSONResponse:
        checked = checked_key(key)
        # Taken here: the work runs in the database's thread, outside the request's context.
        writing = Writing(request.state.client, checked, trace.get_current_span())
        print_ = fingerprint(request.method, request.url.path, body.model_dump(mode="json"))
        reviewer = f"api:{writing.client}"
        known = await api.database().read(lambda c: readmodel.one(c, suggestion_id))
        made: list[Event[Any]] = []  # the decision event, once the owner committed it

        def in_owner(tx: Transaction) -> Answer:
            made.clear()  # a unit tried again after an outage starts afresh
            row = readmodel.one(tx.connection, suggestion_id)
            if row is None and known is not None:
                if known["status"] != "pending":
                    return refused(f"the suggestion was {known['status']} already")
                # The console has not read it yet: the API's copy of the suggestion goes
                # in first, as the console's own consumer would put it (that one then
                # finds it there and changes nothing).
                suggested = api.codec.decode(str(known["envelope"]).encode())
                readmodel.record_suggestion(
                    tx, suggested, readmodel.kind_of(suggested.type), str(known["envelope"])
                )
                row = readmodel.one(tx.connection, suggestion_id)
            if row is None:
                raise ProblemError(404, f"no suggestion {suggestion_id!r}")
            if row["status"] != "pending":
                readmodel.log(
                    tx.connection, reviewer, "decision_refused", suggestion_id, "decided already"
                )
                return refused(f"the suggestion was {row['status']} already")
            try:
                data = api.reviewing.decide(row, verb, reviewer, text=text, changes=changes)
            except DecisionInvalid as exc:
                raise ProblemError(422, str(exc)) from None
            event = writing.traced(deciding.decision_event(api.codec, row, data, service=NAME))
            approved = verb == "approve"
            if not deciding.commit(tx, row, event, reviewer, approved=approved):
                return refused("the suggestion was decided already")
            made[:] = [event]
            decided = schemas.Decided(
                id=suggestion_id,
                status="approved" if approved else "rejected",
                event_id=event.id,
                event_type=event.type,
            )
            return Answer(200, decided.model_dump())

        answer = await run_once(api.decisions(), writing.client, checked, print_, in_owner)
        if made and not answer.replayed:
            api.wake_decisions()
            # The API's own list shows the decision at once; the event's copy coming
            # back from the broker then changes nothing here (and would do the same).
            event = made[0]
            await api.database().run(lambda tx: _settle_here(tx, api.reviewing, event))
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
        media_type = PROBLEM_JSON if answer.status >= 400 else None
        response = JSONResponse(
            answer.body, status_code=answer.status, headers=headers, media_type=media_type
        )
        traceparent = (known or {}).get("traceparent")
        if response.status_code == 200:
            _link_to_suggestion(
                trace.get_current_span(), traceparent if isinstance(traceparent, str) else None
            )
        return response

    @routes.post(
        "/suggestions/{suggestion_id}/approve",
        response_model=schemas.Decided,
        responses=documented(400, 401, 404, 409, 422),
    )
    async def approve(
        request: Request,
        suggestion_id: SuggestionId,
        approval: Annotated[Approval, Body()],  # type: ignore[valid-type]
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Approve a suggestion, with what its agent lets a reviewer change (restock:
        `quantity`; substitute: `sku`, one of those suggested); emits the agent's
        approval event."""
        body = cast(BaseModel, approval)
        given = body.model_dump(exclude_unset=True)
        note = given.pop("note", None)
        changes = {name: value for name, value in given.items() if value is not None}
        return await decide(request, suggestion_id, "approve", body, key, note, changes)

    @routes.post(
        "/suggestions/{suggestion_id}/reject",
        response_model=schemas.Decided,
        responses=documented(400, 401, 404, 409, 422),
    )
    async def reject(
        request: Request,
        suggestion_id: SuggestionId,
        rejection: schemas.RejectRequest,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Reject a suggestion with a reason; emits the agent's rejection event."""
        return await decide(request, suggestion_id, "reject", rejection, key, rejection.reason, {})

    return routes


def _settle_here(tx: Transaction, reviewing: deciding.Reviewing, event: Event[Any]) -> None:
    tx.claim(NAME, [event.id])
    reviewing.settle_from(tx, event)


def _link_to_suggestion(span: Span, traceparent: str | None) -> None:
    """The request's span links to the suggestion's trace: the decision has two causes."""
    if traceparent is None:
        return
    suggested = trace.get_current_span(extract_context({}, traceparent)).get_span_context()
    if suggested.is_valid:
        span.add_link(suggested, {"agentbus.link": "suggestion"})
