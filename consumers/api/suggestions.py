"""Every agent's suggestions: listed, approved and rejected by the agents' declarations.

A decision is the console's (`consumers.review.deciding`) in the API's own database:
one conditional update, one decision event through the outbox, an audit row; the
second decision is a 409, with its audit row too.
"""

# No postponed annotations here: FastAPI reads the approval body's model, which is
# built at run time from the agents' declarations, from the route's annotations.
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel

from agentbus.store import Transaction
from agentbus.telemetry import extract_context
from consumers.api import schemas
from consumers.api.context import ApiContext, IdempotencyKey, SuggestionId
from consumers.api.idempotency import Answer
from consumers.api.problems import ProblemError, documented
from consumers.api.tables import NAME
from consumers.api.writes import Writing, refused, write
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
        suggested: list[str] = []  # the suggestion's traceparent, seen by the work

        def work(tx: Transaction, writing: Writing) -> Answer:
            row = readmodel.one(tx.connection, suggestion_id)
            if row is None:
                raise ProblemError(404, f"no suggestion {suggestion_id!r}")
            if isinstance(row.get("traceparent"), str):
                suggested[:] = [row["traceparent"]]
            reviewer = f"api:{writing.client}"
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
            tx.claim(NAME, [event.id])
            decided = schemas.Decided(
                id=suggestion_id,
                status="approved" if approved else "rejected",
                event_id=event.id,
                event_type=event.type,
            )
            return Answer(200, decided.model_dump())

        response = await write(api, request, key, body, work)
        if response.status_code == 200:
            _link_to_suggestion(trace.get_current_span(), suggested[0] if suggested else None)
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


def _link_to_suggestion(span: Span, traceparent: str | None) -> None:
    """The request's span links to the suggestion's trace: the decision has two causes."""
    if traceparent is None:
        return
    suggested = trace.get_current_span(extract_context({}, traceparent)).get_span_context()
    if suggested.is_valid:
        span.add_link(suggested, {"agentbus.link": "suggestion"})
