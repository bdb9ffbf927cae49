"""What the pages show: the templates, the list's filters, a suggestion's story."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from consumers.review import readmodel
from consumers.review.security import csrf_token

HERE = Path(__file__).parent
STATUSES = ("pending", "approved", "rejected")
URGENCIES = ("low", "medium", "high")


class Views:
    """The console's templates, rendered for the request's reviewer."""

    def __init__(self) -> None:
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = when

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        page = self.templates.get_template(name).render(
            user=request.session.get("user"),
            csrf=csrf_token(request.session),
            path=request.url.path,
            **values,
        )
        return HTMLResponse(page, status_code=status)


def when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return when(datetime.fromisoformat(value))
    return "" if value is None else str(value)


def filters_of(request: Request, kinds: Collection[str]) -> readmodel.Filters:
    """The list's filters from the query; a value the list cannot have means no filter
    (the status: pending), so a crafted query never reaches the database."""
    query = request.query_params
    status = query.get("status", "pending")
    return readmodel.Filters(
        status=status if status in (*STATUSES, "") else "pending",
        agent=query.get("agent", "")[:200],
        kind=_one_of(query.get("kind", ""), kinds),
        urgency=_one_of(query.get("urgency", ""), URGENCIES),
        sku=query.get("sku", "")[:100],
    )


def _one_of(value: str, allowed: Collection[str]) -> str:
    return value if value in allowed else ""


def suggestion(connection: sa.Connection, suggestion_id: str) -> dict[str, Any] | None:
    """A suggestion with how it came about, its evidence and past decisions on its SKU."""
    row = readmodel.one(connection, suggestion_id)
    if row is None:
        return None
    data = row["data"]
    evidence_ids = [str(i) for i in data.get("evidence", [])][:200]
    known = readmodel.events_by_id(connection, [row["trigger_event_id"], *evidence_ids])
    return {
        "s": row,
        "data": data,
        "timeline": list(_timeline(connection, row, known.get(row["trigger_event_id"]))),
        "evidence": [{"id": i, **known.get(i, {})} for i in evidence_ids],
        "past": readmodel.decided_on_sku(connection, row["sku"], row["suggestion_id"]),
    }


def _timeline(
    connection: sa.Connection, row: dict[str, Any], trigger: dict[str, Any] | None
) -> Iterable[dict[str, Any]]:
    if trigger is not None:
        cause_id = trigger["causation_id"]
        if cause_id:
            cause = readmodel.events_by_id(connection, [cause_id]).get(cause_id)
            if cause is not None:
                yield _event_step(cause["type"], cause)
        yield _event_step(trigger["type"], trigger)
    yield _step(
        f"suggested by {row['agent']}", row["created_at"], f"model {row['data'].get('model', '?')}"
    )
    if row["status"] == "pending":
        return
    yield _step(
        f"{row['status']} by {row['decided_by']}", row["decided_at"], row["decision_note"] or ""
    )
    if row["decision_event_id"]:
        purchase = readmodel.caused_by(
            connection, row["decision_event_id"], "purchase_order.created"
        )
        if purchase is not None:
            yield _event_step("purchase order", purchase)


def _event_step(what: str, event: dict[str, Any]) -> dict[str, Any]:
    return _step(what, event["time"], event["summary"])


def _step(what: str, at: Any, detail: str) -> dict[str, Any]:
    return {"what": what, "when": at, "detail": detail}
