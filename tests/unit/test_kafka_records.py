"""The Kafka binding's record layout: key, content-type header, failure headers."""

from __future__ import annotations

from agentbus.retry import ATTEMPTS_HEADER, ERROR_CODE_HEADER
from agentbus.transport.base import PARTITION_KEY_HEADER, Message
from agentbus.transport.kafka_records import (
    ORIGINAL_OFFSET_HEADER,
    record_headers,
    record_key,
    to_message,
)


def test_the_key_is_the_ordering_key_and_the_content_type_a_header() -> None:
    message = Message(
        body=b"{}",
        routing_key="order.created",
        message_id="e1",
        content_type="application/cloudevents+json",
        headers={PARTITION_KEY_HEADER: "order-7", "traceparent": "00-a-b-01"},
    )
    assert record_key(message) == b"order-7"
    headers = dict(record_headers(message))
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["traceparent"] == b"00-a-b-01"


def test_failure_headers_go_by_the_contract_names_and_come_back_as_the_runtime_reads_them() -> None:
    message = Message(
        body=b"x", routing_key="svc.dlq", headers={ERROR_CODE_HEADER: "boom", ATTEMPTS_HEADER: 4}
    )
    wire = record_headers(message)
    assert ("agentbus-error-code", b"boom") in wire
    assert ("agentbus-attempts", b"4") in wire
    back = to_message(
        b"x", [*wire, (ORIGINAL_OFFSET_HEADER, b"17")], routing_key="svc.dlq", event_type=None
    )
    assert back.headers[ERROR_CODE_HEADER] == "boom"
    assert back.headers[ATTEMPTS_HEADER] == 4
    assert back.headers[ORIGINAL_OFFSET_HEADER] == 17


def test_binary_mode_attributes_and_undecodable_headers_pass_through() -> None:
    back = to_message(
        b'{"key": "a"}',
        [
            ("ce_id", b"e1"),
            ("ce_type", b"order.created"),
            ("odd", b"\xff"),
            ("content-type", b"application/json"),
        ],
        routing_key="order.created",
        event_type="order.created",
    )
    assert back.headers["ce_id"] == "e1"
    assert back.headers["odd"] == b"\xff"
    assert back.content_type == "application/json"
    assert back.type == "order.created"


def test_a_record_key_no_header_repeats_becomes_the_ordering_key_of_its_dead_letter() -> None:
    # A producer other than the bus keys its records but sets no header of ours.
    back = to_message(b"{}", [], routing_key="order.created", event_type=None, key=b"order-9")
    assert record_key(back) == b"order-9"
    ours = to_message(
        b"{}",
        [(PARTITION_KEY_HEADER, b"order-7")],
        routing_key="order.created",
        event_type=None,
        key=b"order-9",
    )
    assert ours.headers[PARTITION_KEY_HEADER] == "order-7"
