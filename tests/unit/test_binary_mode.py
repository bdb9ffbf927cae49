"""Binary-mode CloudEvents (attributes in `ce-` headers, the data as the body) decode by the
same rules, and to the same reason codes, as structured mode; a refused message is named by
its event's own id and type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import rabbitmq as sdk_rabbitmq
from cloudevents.core.v1.event import CloudEvent

from agentbus.deadletters import describe_dead_letter
from agentbus.envelope import (
    CONTENT_TYPE,
    KAFKA_HEADER_PREFIX,
    EventCodec,
    binary_attributes,
    is_binary,
    name_of,
    to_structured,
)
from agentbus.errors import MalformedEvent, Reason
from agentbus.transport.base import Message
from tests.contract.catalog import CATALOG
from tests.unit.test_envelope import VALID, with_

codec = EventCodec(CATALOG, max_bytes=64 * 1024)


def binary(
    structured: dict[str, Any], prefix: str = "ce-"
) -> tuple[bytes, str | None, dict[str, Any]]:
    """The binary-mode message of a structured event: (body, content type, headers)."""
    headers = {
        f"{prefix}{name}": value
        for name, value in structured.items()
        if name not in ("data", "datacontenttype")
    }
    body = json.dumps(structured["data"]).encode() if "data" in structured else b""
    return body, structured.get("datacontenttype"), headers


def decode_binary(structured: dict[str, Any], *, body: bytes | None = None, **more: Any) -> Any:
    data, content_type, headers = binary(structured)
    arguments: dict[str, Any] = {"content_type": content_type, "headers": headers, **more}
    return codec.decode(data if body is None else body, **arguments)


def reason_of(call: Any) -> Reason:
    with pytest.raises(MalformedEvent) as caught:
        call()
    assert caught.value.detail
    return caught.value.reason


def test_a_binary_event_decodes_to_the_structured_one() -> None:
    structured = codec.decode(json.dumps(VALID).encode())
    assert decode_binary(VALID) == structured
    assert decode_binary({**VALID, "futureext": "kept out"}) == structured


@pytest.mark.parametrize(
    "fault",
    [
        {"type": ...},
        {"id": ...},
        {"source": ...},
        {"time": ...},
        {"specversion": ...},
        {"datacontenttype": ...},
        {"id": ""},
        {"time": "2026-11-24T09:00:00"},
        {"time": "tomorrow"},
        {"datacontenttype": "text/xml"},
        {"traceparent": "not-a-trace"},
        {"specversion": "0.3"},
        {"type": "order.exploded"},
        {"type": 5},
        {"id": 17},
        {"data": {"key": "o-1"}},
        {"data": {"key": "o-1", "seq": "3"}},
        {"data": [1]},
        {"data": "text"},
    ],
    ids=repr,
)
def test_each_fault_has_the_reason_it_has_in_structured_mode(fault: dict[str, Any]) -> None:
    event = with_(**fault)
    in_structured = reason_of(lambda: codec.decode(json.dumps(event).encode()))
    assert reason_of(lambda: decode_binary(event)) is in_structured


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", Reason.MALFORMED_JSON),
        (b"", Reason.MALFORMED_JSON),
        (b"\xff\xfe{}", Reason.INVALID_ENCODING),
        (b"[" * 40_000 + b"]" * 40_000, Reason.TOO_LARGE),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, Reason.MALFORMED_JSON),
        # Nothing in the data reaches the attributes: a body that is more than one JSON
        # value is refused, not spliced into the event.
        (b'{"key": "o-1", "seq": 3}, "type": "order.cancelled"', Reason.MALFORMED_JSON),
    ],
)
def test_a_body_that_is_not_one_json_value_is_refused(body: bytes, reason: Reason) -> None:
    assert reason_of(lambda: decode_binary(VALID, body=body)) is reason


def test_a_type_property_that_contradicts_the_headers_is_refused() -> None:
    assert reason_of(lambda: decode_binary(VALID, message_type="order.cancelled")) is (
        Reason.PROPERTY_MISMATCH
    )


def test_without_attribute_headers_the_content_type_is_wrong() -> None:
    body, _, _ = binary(VALID)
    for headers in (None, {}, {"traceparent": "x", "cex": "1", "ce-": "empty name"}):
        assert reason_of(
            lambda headers=headers: codec.decode(
                body, content_type="application/json", headers=headers
            )
        ) is (Reason.WRONG_CONTENT_TYPE)


def test_structured_mode_wins_when_the_content_type_says_so() -> None:
    _, _, headers = binary({**VALID, "id": "from-headers"})
    event = codec.decode(json.dumps(VALID).encode(), content_type=CONTENT_TYPE, headers=headers)
    assert event.id == VALID["id"]


def test_header_names_are_case_insensitive_and_values_may_be_bytes() -> None:
    body, content_type, headers = binary(VALID)
    mixed = {name.upper(): value.encode() for name, value in headers.items()}
    assert codec.decode(body, content_type=content_type, headers=mixed).id == VALID["id"]
    broken = {**headers, "ce-source": b"\xff/x"}
    assert reason_of(lambda: codec.decode(body, content_type=content_type, headers=broken)) is (
        Reason.INVALID_ENCODING
    )


def test_an_amqp_timestamp_header_is_read_as_utc() -> None:
    body, content_type, headers = binary(VALID)
    headers["ce-time"] = datetime(2026, 11, 24, 9, 0)  # AMQP timestamps arrive naive
    event = codec.decode(body, content_type=content_type, headers=headers)
    assert event.time == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_the_header_prefix_is_a_parameter() -> None:
    body, content_type, headers = binary(VALID, prefix=KAFKA_HEADER_PREFIX)
    event = codec.decode(
        body, content_type=content_type, headers=headers, header_prefix=KAFKA_HEADER_PREFIX
    )
    assert event.id == VALID["id"]
    assert reason_of(lambda: codec.decode(body, content_type=content_type, headers=headers)) is (
        Reason.WRONG_CONTENT_TYPE
    )


def test_binary_helpers() -> None:
    body, content_type, headers = binary({**VALID, "futureext": "x"})
    assert binary_attributes({**headers, "other": 1}, "ce-")["futureext"] == "x"
    assert is_binary(content_type, headers, "ce-")
    assert not is_binary(CONTENT_TYPE, headers, "ce-")
    assert not is_binary(content_type, {"other": 1}, "ce-")
    structured = json.loads(to_structured(body, content_type=content_type, headers=headers))
    # Extensions are kept and the data is the body: a recording loses nothing.
    assert structured == {**VALID, "futureext": "x"}


# -- the official SDK's RabbitMQ binding -------------------------------------------------


def sdk_event(**attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "type": "order.created",
            "source": "/elsewhere",
            "subject": "o-9",
            "datacontenttype": "application/json",
            "correlationid": "flow-1",
            **attributes,
        },
        data={"key": "o-9", "seq": 9},
    )


def test_the_sdk_binary_and_structured_messages_decode_alike() -> None:
    event = sdk_event()
    as_binary = sdk_rabbitmq.to_binary_event(event)
    as_structured = sdk_rabbitmq.to_structured_event(event)
    assert as_binary.content_type == "application/json"
    assert "ce-id" in as_binary.headers
    from_binary = codec.decode(
        as_binary.body, content_type=as_binary.content_type, headers=as_binary.headers
    )
    from_structured = codec.decode(as_structured.body, content_type=as_structured.content_type)
    assert from_binary == from_structured
    assert from_binary.id == event.get_id()
    assert from_binary.correlationid == "flow-1"
    assert from_binary.time == event.get_time()


# -- naming a refused message ------------------------------------------------------------


def test_a_structured_message_is_named_by_its_body() -> None:
    body = json.dumps(with_(data={"bad": True})).encode()
    assert name_of(body, content_type=CONTENT_TYPE, headers={"ce-id": "other"}) == (
        VALID["id"],
        VALID["type"],
    )


def test_a_binary_message_is_named_by_its_headers_never_by_its_data() -> None:
    headers = {"ce-id": "evt-7", "ce-type": "inventory.adjusted"}
    body = json.dumps({"id": "data-id", "type": "data-type"}).encode()
    assert name_of(body, content_type="application/json", headers=headers) == (
        "evt-7",
        "inventory.adjusted",
    )


@pytest.mark.parametrize(
    ("body", "headers", "named"),
    [
        (b"not json", {}, (None, None)),
        (b'{"id": 5, "type": ""}', {}, (None, None)),
        (b'{"type": "order.created"}', {"ce-id": "h-1"}, ("h-1", "order.created")),
        (b"[1]", {"ce-type": "t"}, (None, "t")),
        (b"[" * 20_000 + b"]" * 20_000, {"ce-id": "deep"}, ("deep", None)),
    ],
)
def test_whatever_cannot_be_read_is_not_named(
    body: bytes, headers: dict[str, Any], named: tuple[str | None, str | None]
) -> None:
    assert name_of(body, content_type=CONTENT_TYPE, headers=headers) == named


def test_a_dead_letter_is_listed_under_its_events_id_and_type() -> None:
    """The message id is the last resort: a client that set none got a random one."""
    body = json.dumps(with_(data={"bad": True})).encode()
    made_up: dict[str, Any] = {"message_id": "f3c1e2d0random", "type": None}
    structured = Message(body, "order.created", content_type=CONTENT_TYPE, **made_up)
    data, content_type, headers = binary(VALID)
    in_binary = Message(
        data, "order.created", content_type=content_type, headers=headers, **made_up
    )
    unreadable = Message(b"\x00", "x", content_type="text/plain", **made_up)
    named = [
        (letter.event_id, letter.type)
        for letter in (
            describe_dead_letter("q", structured),
            describe_dead_letter("q", in_binary),
            describe_dead_letter("q", unreadable),
        )
    ]
    assert named == [
        (VALID["id"], VALID["type"]),
        (VALID["id"], VALID["type"]),
        ("f3c1e2d0random", None),
    ]
