"""JSON Schema and AsyncAPI documents generated from the catalog and service declarations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev group
import pytest

from agentbus.asyncapi import Server, amqp_server, build_asyncapi
from agentbus.envelope import new_event
from agentbus.jsonschema import data_schema, write_schemas
from events import CATALOG
from tests.unit.test_catalog import CONTRACT, EXAMPLES, OPTIONAL, changed

# --- JSON Schema ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas") / "nested"
    write_schemas(CATALOG, out)
    return out


def load(schema_dir: Path, event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_dir / f"{event_type}.schema.json").read_text())
    return schema


def test_one_file_per_type_is_written(tmp_path: Path) -> None:
    written = write_schemas(CATALOG, tmp_path)
    assert len(written) == len(CONTRACT) == 24
    assert written == sorted(written)
    assert {p.name for p in tmp_path.iterdir()} == {f"{t}.schema.json" for t in CONTRACT}


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_each_schema_is_valid_and_accepts_the_example(schema_dir: Path, event_type: str) -> None:
    schema = load(schema_dir, event_type)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == event_type
    assert event_type in schema["$id"]
    assert schema["type"] == "object"
    required = {name for t, name in OPTIONAL if t == event_type}
    assert set(schema["required"]) == CONTRACT[event_type][1] - required
    jsonschema.Draft202012Validator(schema).validate(EXAMPLES[event_type])


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [
        ("stock.received", ("quantity",), 0),
        ("stock.received", ("quantity",), 1.5),
        ("stock.received", ("quantity",), "3"),
        ("inventory.adjusted", ("delta",), 0),
        ("order.created", ("currency",), "usd"),
        ("order.created", ("note",), "x" * 2001),
        ("order.created", ("lines",), []),
        ("order.created", ("lines", 0, "quantity"), 0),
        ("order.created", ("lines", 0, "unit_price"), "19.99"),
        ("payment.authorized", ("amount",), -1),
        ("restock.recommended", ("urgency",), "critical"),
        ("restock.recommended", ("confidence",), 1.5),
        ("order.rejected", ("reason",), "bored"),
        ("order.cancellation_refused", ("reason",), "cancelled"),
        ("shipment.prepared", ("lines",), []),
        ("payment.refunded", ("amount",), -1),
    ],
)
def test_schemas_refuse_what_the_models_refuse(
    schema_dir: Path, event_type: str, path: tuple[str | int, ...], value: Any
) -> None:
    validator = jsonschema.Draft202012Validator(load(schema_dir, event_type))
    assert not validator.is_valid(changed(event_type, path, value))


def test_data_schema_is_the_validation_schema_of_the_model() -> None:
    schema = data_schema(CATALOG["order.created"])
    assert schema["type"] == "object"
    assert "lines" in schema["required"]
    assert schema["properties"]["lines"]["items"]["$ref"].startswith("#/$defs/")


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", "a..b", ".hidden"])
def test_a_type_that_cannot_name_a_file_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="cannot name"):
        write_schemas({bad: CATALOG["order.created"]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- AsyncAPI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeService:
    name: str
    queue: str
    subscribes: Sequence[str] = ()
    publishes: Sequence[str] = ()


SERVICES = [
    FakeService(
        "inventory",
        "inventory-q",
        subscribes=["order.created", "order.cancelled"],
        publishes=["inventory.reserved", "inventory.low"],
    ),
    FakeService("auditor", "audit-q", subscribes=["order.*", "#.failed"]),
    FakeService("recorder", "record-q", subscribes=["#"]),
    FakeService("stock", "stock-q", subscribes=["inventory.#", "stock.*"]),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_asyncapi(
        CATALOG,
        SERVICES,
        servers=[amqp_server("amqp://user:secret@rabbit:5673/shop")],
        title="shop",
        version="7",
    )


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in refs(item)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON Pointer reference (RFC 6901) inside the document."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for token in ref[2:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert key in node, f"{ref}: no {key!r}"
        node = node[key]
    return node


def test_document_header_and_server(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "shop"
    assert document["info"]["version"] == "7"
    assert document["defaultContentType"] == "application/cloudevents+json"
    assert document["servers"] == {
        "rabbitmq": {
            "host": "rabbit:5673",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "RabbitMQ, virtual host 'shop'",
        }
    }
    assert "secret" not in json.dumps(document), "never the credentials of the URL"


@pytest.mark.parametrize(
    ("url", "host", "protocol", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "127.0.0.1:5672", "amqp", "/"),
        ("amqp://localhost", "localhost:5672", "amqp", "/"),
        ("amqps://u:p@mq.example.com/prod", "mq.example.com:5671", "amqps", "prod"),
        ("amqp://h:5690/%2Fshop%2Feu", "h:5690", "amqp", "/shop/eu"),
        ("amqp://[::1]:5672/v", "[::1]:5672", "amqp", "v"),
    ],
)
def test_the_server_and_vhost_come_from_the_broker_url(
    url: str, host: str, protocol: str, vhost: str
) -> None:
    document = build_asyncapi(CATALOG, [], servers=[amqp_server(url)])
    assert document["servers"]["rabbitmq"]["host"] == host
    assert document["servers"]["rabbitmq"]["protocol"] == protocol
    for channel in document["channels"].values():
        assert channel["bindings"]["amqp"]["exchange"]["vhost"] == vhost


def test_servers_are_a_list_of_the_configured_brokers() -> None:
    kafka = Server("kafka", "kafka", "kafka-1.example:9092", description="Kafka")
    document = build_asyncapi(CATALOG, [], servers=[amqp_server("amqp://rabbit/"), kafka])
    assert list(document["servers"]) == ["rabbitmq", "kafka"]
    assert document["servers"]["kafka"] == {
        "host": "kafka-1.example:9092",
        "protocol": "kafka",
        "description": "Kafka",
    }
    assert "servers" not in build_asyncapi(CATALOG, []), "no broker configured, none listed"
    with pytest.raises(ValueError, match="named twice"):
        build_asyncapi(CATALOG, [], servers=[kafka, kafka])


def test_a_channel_and_a_message_per_type(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert {c["address"] for c in channels.values()} == set(CONTRACT)
    assert len(channels) == len(CONTRACT)
    for channel in channels.values():
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] == "routingKey"
        assert amqp["exchange"]["name"] == "agentbus.events"
        assert amqp["exchange"]["type"] == "topic"
        assert amqp["exchange"]["durable"] is True
        (message_ref,) = channel["messages"].values()
        message = resolve(document, message_ref["$ref"])
        assert message["name"] == channel["address"]
        assert message["contentType"] == "application/cloudevents+json"
    assert len(document["components"]["messages"]) == len(CONTRACT)


def test_the_exchange_name_is_a_parameter() -> None:
    document = build_asyncapi(CATALOG, [], exchange="other")
    for channel in document["channels"].values():
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "other"


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = refs(document)
    assert len(found) > 100
    for ref in found:
        resolve(document, ref)


def test_operations_of_each_service(document: dict[str, Any]) -> None:
    operations = document["operations"]
    inventory = {name for name in operations if name.startswith("inventory.")}
    assert inventory == {
        "inventory.receive.order.created",
        "inventory.receive.order.cancelled",
        "inventory.send.inventory.reserved",
        "inventory.send.inventory.low",
    }
    receive = operations["inventory.receive.order.created"]
    assert receive["action"] == "receive"
    assert resolve(document, receive["channel"]["$ref"])["address"] == "order.created"
    assert "inventory-q" in receive["summary"]
    send = operations["inventory.send.inventory.low"]
    assert send["action"] == "send"
    assert resolve(document, send["channel"]["$ref"])["address"] == "inventory.low"
    for operation in operations.values():
        channel = resolve(document, operation["channel"]["$ref"])
        for message in operation["messages"]:
            # An operation's messages must be messages of its own channel.
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert resolve(document, message["$ref"]) in channel["messages"].values()


def received_by(document: dict[str, Any], service: str) -> set[str]:
    prefix = f"{service}.receive."
    return {name.removeprefix(prefix) for name in document["operations"] if name.startswith(prefix)}


def test_pattern_subscriptions_are_expanded_against_the_catalog(document: dict[str, Any]) -> None:
    assert received_by(document, "auditor") == {
        "order.created",
        "order.cancelled",
        "order.confirmed",
        "order.rejected",
        "order.cancellation_refused",
        "payment.failed",  # `#.failed`; inventory.reservation_failed is one other word
    }
    assert received_by(document, "recorder") == set(CONTRACT)
    assert received_by(document, "stock") == {
        "inventory.adjusted",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.released",
        "inventory.low",
        "inventory.returned",
        "stock.received",
    }


@pytest.mark.parametrize(
    ("service", "error"),
    [
        (FakeService("x", "q", publishes=["order.shipped"]), "outside the catalog"),
        (FakeService("x", "q", subscribes=["parcel.#"]), "matches no event type"),
    ],
)
def test_declarations_that_do_not_fit_the_catalog_are_refused(
    service: FakeService, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        build_asyncapi(CATALOG, [service])


def test_two_services_with_one_name_are_refused() -> None:
    twice = [FakeService("x", "q1", subscribes=["order.created"])] * 2
    with pytest.raises(ValueError, match="twice"):
        build_asyncapi(CATALOG, twice)


def payload_validator(document: dict[str, Any], event_type: str) -> jsonschema.Validator:
    message = document["components"]["messages"][event_type]
    # The components travel with the schema so that its local `$ref`s resolve.
    schema = {"components": document["components"], **message["payload"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_message_payload_accepts_an_encoded_event(
    document: dict[str, Any], event_type: str
) -> None:
    data = CATALOG[event_type].model_validate(EXAMPLES[event_type])
    cause = new_event(CATALOG["order.confirmed"](order_id="o-0"), source="/test")
    wire = json.loads(new_event(data, source="/services/test", cause=cause).model_dump_json())
    validator = payload_validator(document, event_type)
    validator.validate(wire)
    assert not validator.is_valid({**wire, "type": "other.type"})
    assert not validator.is_valid({**wire, "specversion": "0.3"})
    assert not validator.is_valid({k: v for k, v in wire.items() if k != "data"})
    assert not validator.is_valid({**wire, "data": {}})


def test_the_shop_services_fit_the_catalog() -> None:
    from consumers.app import app

    document = build_asyncapi(CATALOG, app.resolve(["all"]))
    operations = document["operations"]
    assert operations["inventory.receive.order.created"]["action"] == "receive"
    assert operations["payments.send.payment.failed"]["action"] == "send"
    for ref in refs(document):
        resolve(document, ref)
