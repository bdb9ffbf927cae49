"""The event catalog against CONTRACT.md: every type, its constraints, its documents."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from agentbus.asyncapi import build_asyncapi
from agentbus.jsonschema import write_schemas
from consumers.app import app
from events import CATALOG

CONTRACT_TYPES = {
    "product.upserted": "sku",
    "stock.received": "sku",
    "inventory.adjusted": "sku",
    "order.created": "order_id",
    "order.cancelled": "order_id",
    "inventory.reserved": "order_id",
    "inventory.reservation_failed": "order_id",
    "inventory.released": "order_id",
    "payment.authorized": "order_id",
    "payment.failed": "order_id",
    "order.confirmed": "order_id",
    "order.rejected": "order_id",
    "inventory.low": "sku",
    "restock.recommended": "sku",
    "restock.approved": "sku",
    "restock.rejected": "sku",
    "purchase_order.created": "sku",
    "substitute.suggested": "order_id",
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
}


def test_every_contract_type_is_in_the_catalog_with_its_subject() -> None:
    assert set(CATALOG) == set(CONTRACT_TYPES)
    for event_type, subject in CONTRACT_TYPES.items():
        assert CATALOG[event_type].subject_field == subject


@pytest.mark.parametrize("event_type", sorted(CONTRACT_TYPES))
def test_valid_example_is_accepted_and_extra_fields_ignored(event_type: str) -> None:
    model = CATALOG[event_type]
    data = model.model_validate({**EXAMPLES[event_type], "added_in_a_later_version": 1})
    assert "added_in_a_later_version" not in data.model_dump()
    again = model.model_validate_json(data.model_dump_json())
    assert again == data


BAD: list[tuple[str, dict[str, Any]]] = [
    ("stock.received", {"quantity": 0}),
    ("stock.received", {"quantity": -1}),
    ("stock.received", {"quantity": 1.5}),
    ("stock.received", {"quantity": "3"}),
    ("stock.received", {"quantity": True}),
    ("inventory.adjusted", {"delta": 0}),
    ("product.upserted", {"lead_time_days": -1}),
    ("product.upserted", {"reorder_point": -1}),
    ("product.upserted", {"max_stock": 0}),
    ("product.upserted", {"unit_price": 1.999}),
    ("order.created", {"currency": "eur"}),
    ("order.created", {"note": "x" * 2001}),
    ("order.created", {"lines": []}),
    ("order.created", {"lines": [{"sku": "A", "quantity": 0, "unit_price": 1}]}),
    ("order.rejected", {"reason": "bored"}),
    ("restock.recommended", {"urgency": "critical"}),
    ("restock.recommended", {"confidence": 1.5}),
    ("restock.recommended", {"quantity": 0}),
    ("payment.authorized", {"amount": -1}),
]


@pytest.mark.parametrize(("event_type", "change"), BAD)
def test_constraint_violations_are_refused(event_type: str, change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CATALOG[event_type].model_validate({**EXAMPLES[event_type], **change})


@pytest.mark.parametrize("event_type", sorted(CONTRACT_TYPES))
def test_a_missing_required_field_is_refused(event_type: str) -> None:
    required = [
        name for name, field in CATALOG[event_type].model_fields.items() if field.is_required()
    ]
    assert required
    for name in required:
        data = dict(EXAMPLES[event_type])
        del data[name]
        with pytest.raises(ValidationError):
            CATALOG[event_type].model_validate(data)


def test_money_is_a_json_number_and_round_trips_exactly() -> None:
    model = CATALOG["payment.authorized"]
    data = model.model_validate_json(b'{"order_id":"o","amount":19.99,"currency":"EUR"}')
    assert data.amount == Decimal("19.99")
    assert json.loads(data.model_dump_json())["amount"] == 19.99


def test_json_schemas_accept_examples_and_refuse_violations(tmp_path: Path) -> None:
    written = write_schemas(CATALOG, tmp_path)
    assert len(written) == len(CONTRACT_TYPES)
    for event_type, example in EXAMPLES.items():
        schema = json.loads((tmp_path / f"{event_type}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(example, schema)
    quantity_zero = {**EXAMPLES["stock.received"], "quantity": 0}
    schema = json.loads((tmp_path / "stock.received.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(quantity_zero, schema)


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_document_is_generated_from_the_code() -> None:
    services = app.resolve(["all"])
    document = build_asyncapi(CATALOG, services)
    assert document["asyncapi"] == "3.0.0"
    assert {channel["address"] for channel in document["channels"].values()} == set(CATALOG)
    assert len(document["components"]["messages"]) == len(CATALOG)
    for ref in _refs(document):
        _resolve(document, ref)
    operations = document["operations"]
    assert operations["inventory.receive.order.created"]["action"] == "receive"
    assert operations["inventory.send.inventory.low"]["action"] == "send"
    assert operations["payments.send.payment.failed"]["action"] == "send"
    received = {name for name in operations if name.startswith("orders.receive.")}
    assert "orders.receive.payment.authorized" in received
