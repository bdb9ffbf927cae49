"""The HTTP API's routes (CONTRACT.md, "HTTP API"): writes become events through the
outbox, reads answer from the projections, decisions go by the agents' declarations."""

# No postponed annotations here: FastAPI reads the approval body's model, which is
# built at run time from the agents' declarations, from the route's annotations.
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, cast

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from opentelemetry.trace import Span
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

from agentbus.envelope import Event, EventCodec, derived_id, new_event
from agentbus.metrics import meter_provider
from agentbus.store import Database, Transaction
from agentbus.telemetry import current_traceparent, extract_context, tracer_provider
from consumers.api import projections, schemas
from consumers.api.auth import Tokens
from consumers.api.guards import Guards
from consumers.api.idempotency import HEADER, Answer, checked_key, emit, fingerprint, run_once
from consumers.api.problems import (
    PROBLEM_JSON,
    TITLES,
    Problem,
    ProblemError,
    documented,
    install,
)
from consumers.api.tables import NAME
from consumers.review import deciding, readmodel
from consumers.review.deciding import DecisionInvalid, Reviewing
from events import OrderCancelled, OrderCreated, ProductUpserted, StockReceived
from events.types import MAX_MONEY

SOURCE = f"/services/{NAME}"
# Keys of path parameters: as the catalog's ids, without control characters.
_KEY = r"^[^\x00-\x1f\x7f]+$"
OrderId = Annotated[str, Path(min_length=1, max_length=200, pattern=_KEY)]
SkuPath = Annotated[str, Path(min_length=1, max_length=100, pattern=_KEY)]
SuggestionId = Annotated[str, Path(min_length=1, max_length=200, pattern=_KEY)]
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


def build_app(api: ApiContext) -> FastAPI:
    app = FastAPI(
        dependencies=[Depends(_known_query_only)],
        # FastAPI's own OpenTelemetry: a SERVER span per request, child of the client's
        # traceparent, and the HTTP request metrics. Events a handler emits carry that
        # span as their traceparent, so the request and what it caused are one trace.
        # No spans per dependency, and no logs of validation failures (they quote
        # what clients sent: customers' notes).
        telemetry={
            "tracer_provider": tracer_provider(),
            "meter_provider": meter_provider(),
            "operation_spans": False,
            "logs": False,
        },
        title="agentbus shop API",
        version="1",
        description="Orders, catalog, stock and decisions on agents' suggestions. "
        "Writes become events; reads answer from projections of the events.",
    )
    install(app)
    Approval = schemas.approval_request(api.reviewing.decisions)

    async def write(
        request: Request,
        key: str | None,
        body: BaseModel | None,
        work: Callable[[Transaction, Writing], Answer],
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

    def made(data: BaseModel, writing: Writing) -> Event[Any]:
        event_type: str = getattr(data, "event_type")  # noqa: B009 - a catalog ClassVar
        event = new_event(
            data, source=SOURCE, id=derived_id(NAME, writing.client, writing.key, event_type)
        )
        return writing.traced(event)

    # -- orders ------------------------------------------------------------------------

    @app.post(
        "/orders",
        status_code=202,
        response_model=schemas.OrderAccepted,
        responses=documented(400, 401, 409, 422),
        tags=["orders"],
    )
    async def place_order(
        request: Request, order: schemas.OrderRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Place an order, priced from the catalog; emits `order.created`."""
        skus = [line.sku for line in order.lines]
        if len(set(skus)) != len(skus):
            raise ProblemError(422, "each SKU may appear on one line only")

        def work(tx: Transaction, writing: Writing) -> Answer:
            prices = projections.prices(tx.connection, skus)
            unknown = [sku for sku in skus if sku not in prices]
            if unknown:
                raise ProblemError(422, f"not in the catalog: {', '.join(unknown[:20])}")
            total = sum((prices[line.sku] * line.quantity for line in order.lines), Decimal(0))
            if total > MAX_MONEY:
                raise ProblemError(422, f"the order's total exceeds {MAX_MONEY}")
            order_id = derived_id(NAME, writing.client, writing.key, "order")
            data = OrderCreated(
                order_id=order_id,
                customer_id=order.customer_id,
                lines=[
                    {"sku": line.sku, "quantity": line.quantity, "unit_price": prices[line.sku]}
                    for line in order.lines
                ],
                currency=order.currency,
                note=order.note,
            )
            emit(tx, made(data, writing))
            accepted = schemas.OrderAccepted(order_id=order_id, status="pending", total=total)
            return Answer(202, accepted.model_dump(mode="json"))

        return await write(request, key, order, work)

    @app.get(
        "/orders/{order_id}",
        response_model=schemas.OrderView,
        responses=documented(401, 404, 422),
        tags=["orders"],
    )
    async def get_order(order_id: OrderId) -> schemas.OrderView:
        """An order as the events tell it."""
        found = await api.database().read(lambda c: projections.order(c, order_id))
        if found is None:
            raise ProblemError(404, f"no order {order_id!r}")
        return schemas.OrderView(
            order_id=found["order_id"],
            status=found["status"],
            reason=found["reason"],
            lines=found["lines"],
            total=float(Decimal(found["total"])),
            currency=found["currency"],
        )

    @app.post(
        "/orders/{order_id}/cancel",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 404, 409, 422),
        tags=["orders"],
    )
    async def cancel_order(
        request: Request,
        order_id: OrderId,
        cancel: schemas.CancelRequest,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Ask for an order to be cancelled; emits `order.cancelled`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            found = projections.order(tx.connection, order_id)
            if found is None:
                raise ProblemError(404, f"no order {order_id!r}")
            event = made(OrderCancelled(order_id=order_id, reason=cancel.reason), writing)
            if found["correlation_id"]:
                # The cancellation belongs to the order's business flow.
                event = event.model_copy(update={"correlationid": found["correlation_id"]})
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(request, key, cancel, work)

    # -- catalog and stock -------------------------------------------------------------

    @app.put(
        "/products/{sku}",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 409, 422),
        tags=["catalog"],
    )
    async def put_product(
        request: Request, sku: SkuPath, product: schemas.ProductRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Add or change a product; emits `product.upserted`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            event = made(ProductUpserted(sku=sku, **product.model_dump()), writing)
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(request, key, product, work)

    @app.post(
        "/stock/receipts",
        status_code=202,
        response_model=schemas.Accepted,
        responses=documented(400, 401, 409, 422),
        tags=["stock"],
    )
    async def receive_stock(
        request: Request, receipt: schemas.ReceiptRequest, key: IdempotencyKey = None
    ) -> JSONResponse:
        """Record goods received; emits `stock.received`."""

        def work(tx: Transaction, writing: Writing) -> Answer:
            event = made(StockReceived(**receipt.model_dump()), writing)
            emit(tx, event)
            return Answer(202, schemas.Accepted(event_id=event.id).model_dump())

        return await write(request, key, receipt, work)

    @app.get(
        "/inventory/{sku}",
        response_model=schemas.InventoryView,
        responses=documented(401, 404, 422),
        tags=["stock"],
    )
    async def get_inventory(sku: SkuPath) -> schemas.InventoryView:
        """A SKU's stock as the events tell it."""
        found = await api.database().read(lambda c: projections.inventory(c, sku))
        if found is None:
            raise ProblemError(404, f"no product or stock known for {sku!r}")
        on_hand, reserved = found["on_hand"], found["reserved"]
        return schemas.InventoryView(
            sku=sku, on_hand=on_hand, reserved=reserved, available=on_hand - reserved
        )

    # -- suggestions -------------------------------------------------------------------

    @app.get(
        "/suggestions",
        response_model=list[schemas.SuggestionView],
        responses=documented(401, 422),
        tags=["suggestions"],
    )
    async def list_suggestions(
        status: Literal["pending", "approved", "rejected"] | None = None,
        agent: Annotated[str | None, Query(max_length=200, pattern=_KEY)] = None,
    ) -> list[schemas.SuggestionView]:
        """Every agent's suggestions seen, newest first, with their review status."""
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
        def work(tx: Transaction, writing: Writing) -> Answer:
            row = readmodel.one(tx.connection, suggestion_id)
            if row is None:
                raise ProblemError(404, f"no suggestion {suggestion_id!r}")
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
            _link_to_suggestion(writing.span, row)
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

        return await write(request, key, body, work)

    @app.post(
        "/suggestions/{suggestion_id}/approve",
        response_model=schemas.Decided,
        responses=documented(400, 401, 404, 409, 422),
        tags=["suggestions"],
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

    @app.post(
        "/suggestions/{suggestion_id}/reject",
        response_model=schemas.Decided,
        responses=documented(400, 401, 404, 409, 422),
        tags=["suggestions"],
    )
    async def reject(
        request: Request,
        suggestion_id: SuggestionId,
        rejection: schemas.RejectRequest,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Reject a suggestion with a reason; emits the agent's rejection event."""
        return await decide(request, suggestion_id, "reject", rejection, key, rejection.reason, {})

    # -- operations --------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"], responses=documented(503))
    async def readyz() -> Any:
        try:
            await asyncio.wait_for(api.ready(), 2.0)
        except Exception as exc:  # a probe reports any failure, never raises
            raise ProblemError(503, f"not ready: {type(exc).__name__}: {exc}"[:300]) from None
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _documented(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Guards, tokens=api.tokens)
    return app


async def _known_query_only(request: Request) -> None:
    """A query parameter the route does not take is a mistake to say, not to ignore."""
    known: set[str] = set()
    pending = [getattr(request.scope.get("route"), "dependant", None)]
    while pending:
        dependant = pending.pop()
        if dependant is not None:
            known.update(param.alias for param in dependant.query_params)
            pending.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(repr(name[:50]) for name in unknown[:5])
        raise ProblemError(422, f"unknown query parameter {names}")


def refused(detail: str) -> Answer:
    body = Problem(title=TITLES[409], status=409, detail=detail)
    return Answer(409, body.model_dump(mode="json", exclude_none=True))


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


def _link_to_suggestion(span: Span, row: dict[str, Any]) -> None:
    """The request's span links to the suggestion's trace: the decision has two causes."""
    traceparent = row.get("traceparent")
    if not isinstance(traceparent, str):
        return
    suggested = trace.get_current_span(extract_context({}, traceparent)).get_span_context()
    if suggested.is_valid:
        span.add_link(suggested, {"agentbus.link": "suggestion"})


def _documented(document: dict[str, Any]) -> dict[str, Any]:
    """Errors as problem documents, and the bearer scheme on every protected path."""
    components = document.setdefault("components", {})
    schemas_ = components.setdefault("schemas", {})
    schemas_.update(Problem.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"])
    schemas_["Problem"] = {
        k: v
        for k, v in Problem.model_json_schema(ref_template="#/components/schemas/{model}").items()
        if k != "$defs"
    }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas_.pop(name, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    public = {"/healthz", "/readyz"}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if str(status).startswith(("4", "5")):
                    response["content"] = {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
                    response.setdefault("description", "A problem")
            if path not in public:
                operation["security"] = [{"bearer": []}]
                responses.setdefault(
                    "401",
                    {
                        "description": "Unauthorized",
                        "content": {
                            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                        },
                    },
                )
    return document
