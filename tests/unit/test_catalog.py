"""The event catalog against CONTRACT.md: every type, its fields and their constraints.

The expectations here are written from the contract, not read from the code.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import events
from events import CATALOG, EventData

# type -> (subject field, data fields), as the contract's table lists them.
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "product.upserted": (
        "sku",
        {
            "sku",
            "name",
            "description",
            "category",
            "unit_cost",
            "unit_price",
            "lead_time_days",
            "reorder_point",
            "max_stock",
            "supplier",
        },
    ),
    "stock.received": ("sku", {"sku", "quantity", "purchase_order_id"}),
    "inventory.adjusted": ("sku", {"sku", "delta", "reason"}),
    "order.created": ("order_id", {"order_id", "customer_id", "lines", "currency", "note"}),
    "order.cancelled": ("order_id", {"order_id", "reason"}),
    "inventory.reserved": ("order_id", {"order_id", "lines"}),
    "inventory.reservation_failed": ("order_id", {"order_id", "shortages"}),
    "inventory.released": ("order_id", {"order_id", "lines"}),
    "payment.authorized": ("order_id", {"order_id", "amount", "currency"}),
    "payment.failed": ("order_id", {"order_id", "amount", "currency", "reason"}),
    "order.confirmed": ("order_id", {"order_id"}),
    "order.rejected": ("order_id", {"order_id", "reason"}),
    "inventory.low": (
        "sku",
        {
            "sku",
            "available",
            "on_hand",
            "reserved",
            "reorder_point",
            "max_stock",
            "lead_time_days",
        },
    ),
    "restock.recommended": (
        "sku",
        {
            "recommendation_id",
            "sku",
            "quantity",
            "urgency",
            "rationale",
            "evidence",
            "confidence",
            "agent",
            "model",
            "prompt_version",
            "trigger_event_id",
        },
    ),
    "restock.approved": ("sku", {"recommendation_id", "sku", "quantity", "reviewer", "note"}),
    "restock.rejected": ("sku", {"recommendation_id", "sku", "reviewer", "reason"}),
    "purchase_order.created": (
        "sku",
        {"purchase_order_id", "sku", "quantity", "supplier", "recommendation_id"},
    ),
    "substitute.suggested": (
        "order_id",
        {
            "suggestion_id",
            "order_id",
            "sku",
            "substitutes",
            "message",
            "agent",
            "model",
            "trigger_event_id",
        },
    ),
    "shipment.prepared": ("order_id", {"shipment_id", "order_id", "lines"}),
    "payment.refunded": ("order_id", {"order_id", "amount", "currency", "reason"}),
    "inventory.returned": ("order_id", {"order_id", "lines"}),
    "order.cancellation_refused": ("order_id", {"order_id", "reason"}),
    "substitute.accepted": ("order_id", {"suggestion_id", "order_id", "sku", "reviewer", "note"}),
    "substitute.dismissed": ("order_id", {"suggestion_id", "order_id", "reviewer", "reason"}),
}

# Only the fields the contract marks "or null" may be left out.
OPTIONAL = {
    ("stock.received", "purchase_order_id"),
    ("order.created", "note"),
    ("restock.approved", "note"),
    ("substitute.accepted", "note"),
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "product.upserted": {
        "sku": "A-1",
        "name": "Chef knife",
        "description": "Sharp.",
        "category": "kitchen",
        "unit_cost": 10.5,
        "unit_price": 19.99,
        "lead_time_days": 3,
        "reorder_point": 5,
        "max_stock": 40,
        "supplier": "acme",
    },
    "stock.received": {"sku": "A-1", "quantity": 10, "purchase_order_id": None},
    "inventory.adjusted": {"sku": "A-1", "delta": -2, "reason": "breakage"},
    "order.created": {
        "order_id": "o-1",
        "customer_id": "c-1",
        "currency": "EUR",
        "note": "by the door",
        "lines": [{"sku": "A-1", "quantity": 2, "unit_price": 19.99}],
    },
    "order.cancelled": {"order_id": "o-1", "reason": "changed my mind"},
    "inventory.reserved": {"order_id": "o-1", "lines": [{"sku": "A-1", "quantity": 2}]},
    "inventory.reservation_failed": {
        "order_id": "o-1",
        "shortages": [{"sku": "A-1", "requested": 5, "available": 1}],
    },
    "inventory.released": {"order_id": "o-1", "lines": [{"sku": "A-1", "quantity": 2}]},
    "payment.authorized": {"order_id": "o-1", "amount": 39.98, "currency": "EUR"},
    "payment.failed": {
        "order_id": "o-1",
        "amount": 6000,
        "currency": "EUR",
        "reason": "limit_exceeded",
    },
    "order.confirmed": {"order_id": "o-1"},
    "order.rejected": {"order_id": "o-1", "reason": "out_of_stock"},
    "inventory.low": {
        "sku": "A-1",
        "available": 3,
        "on_hand": 5,
        "reserved": 2,
        "reorder_point": 5,
        "max_stock": 40,
        "lead_time_days": 3,
    },
    "restock.recommended": {
        "recommendation_id": "r-1",
        "sku": "A-1",
        "quantity": 30,
        "urgency": "high",
        "rationale": "Demand over lead time.",
        "evidence": ["e-1"],
        "confidence": 0.8,
        "agent": "restock",
        "model": "policy",
        "prompt_version": "restock/v1",
        "trigger_event_id": "e-1",
    },
    "restock.approved": {
        "recommendation_id": "r-1",
        "sku": "A-1",
        "quantity": 30,
        "reviewer": "ana",
        "note": "",
    },
    "restock.rejected": {
        "recommendation_id": "r-1",
        "sku": "A-1",
        "reviewer": "ana",
        "reason": "too many",
    },
    "purchase_order.created": {
        "purchase_order_id": "po-1",
        "sku": "A-1",
        "quantity": 30,
        "supplier": "acme",
        "recommendation_id": "r-1",
    },
    "substitute.suggested": {
        "suggestion_id": "s-1",
        "order_id": "o-1",
        "sku": "A-1",
        "substitutes": [{"sku": "A-2", "name": "Santoku", "score": 0.9, "available": 4}],
        "message": "Try the santoku.",
        "agent": "substitute",
        "model": "policy",
        "trigger_event_id": "e-2",
    },
    "shipment.prepared": {
        "shipment_id": "sh-1",
        "order_id": "o-1",
        "lines": [{"sku": "A-1", "quantity": 2}],
    },
    "payment.refunded": {
        "order_id": "o-1",
        "amount": 39.98,
        "currency": "EUR",
        "reason": "cancelled",
    },
    "inventory.returned": {"order_id": "o-1", "lines": [{"sku": "A-1", "quantity": 2}]},
    "order.cancellation_refused": {"order_id": "o-1", "reason": "shipped"},
    "substitute.accepted": {
        "suggestion_id": "s-1",
        "order_id": "o-1",
        "sku": "A-2",
        "reviewer": "ana",
        "note": None,
    },
    "substitute.dismissed": {
        "suggestion_id": "s-1",
        "order_id": "o-1",
        "reviewer": "ana",
        "reason": "the customer wants a refund",
    },
}

Path = tuple[str | int, ...]


def changed(event_type: str, path: Path, value: Any) -> dict[str, Any]:
    """A deep copy of the example of `event_type` with the value at `path` replaced."""
    data: dict[str, Any] = json.loads(json.dumps(EXAMPLES[event_type]))
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return data


def without(event_type: str, field: str) -> dict[str, Any]:
    return {k: v for k, v in EXAMPLES[event_type].items() if k != field}


def assert_refused(event_type: str, data: dict[str, Any]) -> None:
    """Refused as a Python object and, when it can be written as JSON, as JSON bytes too."""
    model = CATALOG[event_type]
    with pytest.raises(ValidationError):
        model.model_validate(data)
    try:
        raw = json.dumps(data, allow_nan=False)
    except ValueError:
        return  # NaN and infinities cannot reach a consumer as JSON
    with pytest.raises(ValidationError):
        model.model_validate_json(raw)


# --- the catalog ------------------------------------------------------------------------


def test_every_contract_type_has_its_model_subject_and_fields() -> None:
    assert set(CATALOG) == set(CONTRACT)
    for event_type, (subject, fields) in CONTRACT.items():
        model = CATALOG[event_type]
        assert issubclass(model, EventData)
        assert model.event_type == event_type
        assert model.subject_field == subject
        assert set(model.model_fields) == fields, event_type


def test_only_fields_the_contract_makes_nullable_are_optional() -> None:
    optional = {
        (event_type, name)
        for event_type, model in CATALOG.items()
        for name, field in model.model_fields.items()
        if not field.is_required()
    }
    assert optional == OPTIONAL


def test_the_package_exports_every_model_under_its_own_name() -> None:
    assert set(events.__all__) >= {"CATALOG", "EventData"} | {
        model.__name__ for model in CATALOG.values()
    }
    for name in events.__all__:
        assert hasattr(events, name), name
    for model in CATALOG.values():
        assert getattr(events, model.__name__) is model


def test_the_catalog_is_read_only() -> None:
    with pytest.raises(TypeError):
        CATALOG["x.y"] = EventData  # type: ignore[index]


# --- valid data -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_a_valid_example_is_accepted_and_round_trips_through_json(event_type: str) -> None:
    model = CATALOG[event_type]
    data = model.model_validate(EXAMPLES[event_type])
    assert model.model_validate_json(json.dumps(EXAMPLES[event_type])) == data
    assert model.model_validate_json(data.model_dump_json()) == data
    assert json.loads(data.model_dump_json()) == EXAMPLES[event_type] | {
        name: None for (t, name) in OPTIONAL if t == event_type and name not in EXAMPLES[t]
    }


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_unknown_extra_fields_are_ignored(event_type: str) -> None:
    model = CATALOG[event_type]
    data = model.model_validate_json(
        json.dumps({**EXAMPLES[event_type], "added_in_a_later_version": {"x": [1]}})
    )
    assert "added_in_a_later_version" not in data.model_dump()
    assert data == model.model_validate(EXAMPLES[event_type])


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("order.created", ("lines", 0)),
        ("inventory.reserved", ("lines", 0)),
        ("inventory.reservation_failed", ("shortages", 0)),
        ("substitute.suggested", ("substitutes", 0)),
    ],
)
def test_unknown_extra_fields_in_nested_items_are_ignored(event_type: str, path: Path) -> None:
    data = changed(event_type, (*path, "later"), "x")
    dumped = CATALOG[event_type].model_validate(data).model_dump()
    node: Any = dumped
    for step in path:
        node = node[step]
    assert "later" not in node


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_event_data_is_immutable(event_type: str) -> None:
    data = CATALOG[event_type].model_validate(EXAMPLES[event_type])
    with pytest.raises(ValidationError):
        setattr(data, CATALOG[event_type].subject_field, "other")


EDGES_ACCEPTED: list[tuple[str, Path, Any]] = [
    ("stock.received", ("quantity",), 1),
    ("stock.received", ("purchase_order_id",), "po-9"),
    ("inventory.adjusted", ("delta",), 1),
    ("inventory.adjusted", ("delta",), -1),
    ("product.upserted", ("lead_time_days",), 0),
    ("product.upserted", ("reorder_point",), 0),
    ("product.upserted", ("unit_cost",), 0),
    ("product.upserted", ("unit_cost",), 10),
    ("product.upserted", ("unit_price",), 0.1),
    ("product.upserted", ("description",), ""),
    ("order.created", ("note",), None),
    ("order.created", ("note",), "x" * 2000),
    ("order.created", ("currency",), "JPY"),
    ("inventory.low", ("available",), -4),
    ("inventory.released", ("lines",), []),
    ("restock.recommended", ("confidence",), 0),
    ("restock.recommended", ("confidence",), 1),
    ("restock.recommended", ("evidence",), []),
    ("restock.recommended", ("urgency",), "low"),
    ("restock.approved", ("note",), None),
    ("order.rejected", ("reason",), "invalid"),
    ("inventory.returned", ("lines",), []),
]


@pytest.mark.parametrize(("event_type", "path", "value"), EDGES_ACCEPTED)
def test_values_at_the_edge_are_accepted(event_type: str, path: Path, value: Any) -> None:
    data = changed(event_type, path, value)
    CATALOG[event_type].model_validate(data)
    CATALOG[event_type].model_validate_json(json.dumps(data))


# --- constraint violations --------------------------------------------------------------

QUANTITY_FIELDS: list[tuple[str, Path]] = [
    ("stock.received", ("quantity",)),
    ("order.created", ("lines", 0, "quantity")),
    ("inventory.reserved", ("lines", 0, "quantity")),
    ("inventory.released", ("lines", 0, "quantity")),
    ("shipment.prepared", ("lines", 0, "quantity")),
    ("inventory.returned", ("lines", 0, "quantity")),
    ("inventory.reservation_failed", ("shortages", 0, "requested")),
    ("restock.recommended", ("quantity",)),
    ("restock.approved", ("quantity",)),
    ("purchase_order.created", ("quantity",)),
    ("product.upserted", ("max_stock",)),
    ("inventory.low", ("max_stock",)),
]
NOT_QUANTITIES = [0, -1, 1.5, 2.0, "3", True, None, [1]]


@pytest.mark.parametrize("value", NOT_QUANTITIES, ids=repr)
@pytest.mark.parametrize(("event_type", "path"), QUANTITY_FIELDS)
def test_a_quantity_is_a_positive_integer(event_type: str, path: Path, value: Any) -> None:
    assert_refused(event_type, changed(event_type, path, value))


MONEY_FIELDS: list[tuple[str, Path]] = [
    ("product.upserted", ("unit_cost",)),
    ("product.upserted", ("unit_price",)),
    ("order.created", ("lines", 0, "unit_price")),
    ("payment.authorized", ("amount",)),
    ("payment.failed", ("amount",)),
    ("payment.refunded", ("amount",)),
]
NOT_MONEY = [1.999, 0.001, -0.01, "19.99", True, None, math.nan, math.inf, 10**13]


@pytest.mark.parametrize("value", NOT_MONEY, ids=repr)
@pytest.mark.parametrize(("event_type", "path"), MONEY_FIELDS)
def test_money_is_a_non_negative_number_with_two_places(
    event_type: str, path: Path, value: Any
) -> None:
    assert_refused(event_type, changed(event_type, path, value))


VIOLATIONS: list[tuple[str, Path, Any]] = [
    ("inventory.adjusted", ("delta",), 0),
    ("inventory.adjusted", ("delta",), -0.5),
    ("product.upserted", ("lead_time_days",), -1),
    ("product.upserted", ("reorder_point",), -1),
    ("product.upserted", ("reorder_point",), 1.0),
    ("inventory.low", ("lead_time_days",), -1),
    ("inventory.low", ("on_hand",), -1),
    ("inventory.low", ("reserved",), -1),
    ("inventory.low", ("available",), "3"),
    ("inventory.reservation_failed", ("shortages", 0, "available"), -1),
    ("order.created", ("currency",), "eur"),
    ("order.created", ("currency",), "usd"),
    ("order.created", ("currency",), "EURO"),
    ("order.created", ("currency",), "EU"),
    ("order.created", ("currency",), "EUR\n"),
    ("payment.authorized", ("currency",), "usd"),
    ("order.created", ("note",), "x" * 2001),
    ("restock.approved", ("note",), "x" * 2001),
    ("order.created", ("lines",), []),
    ("order.created", ("lines",), [{"sku": "A", "quantity": 1, "unit_price": 1}] * 501),
    ("order.created", ("lines", 0), {"sku": "A-1", "quantity": 1}),
    ("order.created", ("customer_id",), ""),
    ("inventory.reserved", ("lines",), []),
    ("inventory.reservation_failed", ("shortages",), []),
    ("order.rejected", ("reason",), "bored"),
    ("order.rejected", ("reason",), "Out_Of_Stock"),
    ("order.cancellation_refused", ("reason",), "cancelled"),
    ("order.cancellation_refused", ("reason",), "Shipped"),
    ("shipment.prepared", ("lines",), []),
    ("shipment.prepared", ("shipment_id",), ""),
    ("payment.refunded", ("currency",), "eur"),
    ("restock.recommended", ("urgency",), "critical"),
    ("restock.recommended", ("confidence",), 1.5),
    ("restock.recommended", ("confidence",), -0.1),
    ("restock.recommended", ("confidence",), "0.5"),
    ("restock.recommended", ("confidence",), True),
    ("restock.recommended", ("confidence",), math.nan),
    ("restock.recommended", ("evidence",), ["e"] * 201),
    ("restock.recommended", ("evidence",), [""]),
    ("restock.recommended", ("rationale",), "x" * 4001),
    ("substitute.suggested", ("substitutes",), []),
    ("substitute.suggested", ("substitutes", 0, "score"), 1.01),
    ("substitute.suggested", ("substitutes", 0, "available"), -1),
    ("substitute.suggested", ("message",), "x" * 4001),
    (
        "substitute.suggested",
        ("substitutes",),
        [{"sku": "B", "name": "b", "score": 0.5, "available": 1}] * 51,
    ),
    ("stock.received", ("sku",), ""),
    ("stock.received", ("sku",), "s" * 101),
    ("stock.received", ("sku",), 42),
    ("stock.received", ("purchase_order_id",), "p" * 201),
    ("order.cancelled", ("reason",), "x" * 501),
    ("product.upserted", ("name",), ""),
    ("product.upserted", ("name",), "n" * 301),
    ("product.upserted", ("description",), "d" * 4001),
]


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    VIOLATIONS,
    ids=[f"{t}:{'.'.join(map(str, p))}={str(v)[:12]!r}" for t, p, v in VIOLATIONS],
)
def test_a_constraint_violation_is_refused(event_type: str, path: Path, value: Any) -> None:
    assert_refused(event_type, changed(event_type, path, value))


@pytest.mark.parametrize(
    ("event_type", "field"),
    sorted(
        (event_type, field)
        for event_type, (_, fields) in CONTRACT.items()
        for field in fields
        if (event_type, field) not in OPTIONAL
    ),
)
def test_a_missing_required_field_is_refused(event_type: str, field: str) -> None:
    assert_refused(event_type, without(event_type, field))


# --- money on the wire ------------------------------------------------------------------


def test_money_is_a_json_number_and_round_trips_exactly() -> None:
    model = CATALOG["payment.authorized"]
    data = model.model_validate_json(b'{"order_id":"o","amount":19.99,"currency":"EUR"}')
    assert data.model_dump()["amount"] == Decimal("19.99")
    text = data.model_dump_json()
    assert '"amount":19.99' in text
    assert model.model_validate_json(text) == data
    whole = model.model_validate({"order_id": "o", "amount": Decimal("20.00"), "currency": "EUR"})
    assert '"amount":20,' in whole.model_dump_json()


@given(st.integers(min_value=0, max_value=999_999_999_999_999))
def test_every_amount_in_range_round_trips_exactly_as_a_json_number(cents: int) -> None:
    amount = Decimal(cents).scaleb(-2)
    model = CATALOG["payment.authorized"]
    data = model.model_validate({"order_id": "o", "amount": amount, "currency": "EUR"})
    wire = json.loads(data.model_dump_json())
    assert isinstance(wire["amount"], int | float)
    again = model.model_validate_json(data.model_dump_json())
    assert again.model_dump()["amount"] == amount
