"""The envelope codec: strict decoding with one reason code per kind of fault."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbus.envelope import CONTENT_TYPE, EventCodec, derived_id, new_event
from agentbus.errors import MalformedEvent, Reason
from tests.contract.catalog import CATALOG, sample

codec = EventCodec(CATALOG, max_bytes=64 * 1024)

VALID: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "/services/test",
    "type": "order.created",
    "time": "2026-11-24T09:00:00Z",
    "datacontenttype": "application/json",
    "subject": "o-1",
    "data": {"key": "o-1", "seq": 3},
}


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_round_trip_keeps_every_attribute() -> None:
    event = sample("order.created", "sku-1", 4)
    decoded = codec.decode(codec.encode(event))
    assert decoded.model_dump() == event.model_dump()
    assert decoded.data.seq == 4
    assert type(decoded.data).__name__ == "order_created"


def test_valid_event_with_unknown_extra_fields_is_accepted() -> None:
    body = encode({**VALID, "futureext": "x", "data": {**VALID["data"], "later": 1}})
    event = codec.decode(body)
    assert event.id == "evt-1"
    assert event.subject == "o-1"
    assert event.key == "o-1"


def with_(**changes: Any) -> dict[str, Any]:
    value = dict(VALID)
    for key, new in changes.items():
        if new is ...:
            value.pop(key)
        else:
            value[key] = new
    return value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", Reason.MALFORMED_JSON),
        (b"", Reason.MALFORMED_JSON),
        (b"\xff\xfe{}", Reason.INVALID_ENCODING),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b"42", Reason.NOT_AN_OBJECT),
        (b'"text"', Reason.NOT_AN_OBJECT),
        (encode(with_(type=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(id=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(source=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(time=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(data=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(specversion=...)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(id="")), Reason.INVALID_ATTRIBUTE),
        (encode(with_(id=17)), Reason.INVALID_ATTRIBUTE),
        (encode(with_(time="2026-11-24T09:00:00")), Reason.INVALID_ATTRIBUTE),
        (encode(with_(time="tomorrow")), Reason.INVALID_ATTRIBUTE),
        (encode(with_(datacontenttype="text/xml")), Reason.INVALID_ATTRIBUTE),
        (encode(with_(traceparent="not-a-trace")), Reason.INVALID_ATTRIBUTE),
        (encode(with_(specversion="0.3")), Reason.UNSUPPORTED_SPECVERSION),
        (encode(with_(type="order.exploded")), Reason.UNKNOWN_TYPE),
        (encode(with_(type=5)), Reason.MISSING_ATTRIBUTE),
        (encode(with_(data={"key": "o-1"})), Reason.INVALID_DATA),
        (encode(with_(data={"key": "o-1", "seq": "3"})), Reason.INVALID_DATA),
        (encode(with_(data=[1])), Reason.INVALID_DATA),
        (b"[" * 100_000 + b"]" * 100_000, Reason.TOO_LARGE),
    ],
)
def test_each_fault_has_its_reason(body: bytes, reason: Reason) -> None:
    with pytest.raises(MalformedEvent) as caught:
        codec.decode(body)
    assert caught.value.reason is reason
    assert caught.value.code == reason.value
    assert caught.value.detail


def test_deep_nesting_is_refused_not_crashing() -> None:
    body = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(MalformedEvent) as caught:
        codec.decode(body)
    assert caught.value.reason is Reason.MALFORMED_JSON


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_wrong_content_type(content_type: str | None) -> None:
    with pytest.raises(MalformedEvent) as caught:
        codec.decode(encode(VALID), content_type=content_type)
    assert caught.value.reason is Reason.WRONG_CONTENT_TYPE


def test_content_type_parameters_are_allowed() -> None:
    codec.decode(encode(VALID), content_type=f"{CONTENT_TYPE}; charset=utf-8")


def test_properties_that_disagree_with_the_body_are_refused() -> None:
    with pytest.raises(MalformedEvent) as caught:
        codec.decode(encode(VALID), message_type="order.cancelled")
    assert caught.value.reason is Reason.PROPERTY_MISMATCH


def test_new_event_carries_the_flow_of_its_cause() -> None:
    root = sample("order.created", "o-1", 1)
    assert root.correlationid == root.id
    assert root.subject == "o-1"
    child = new_event(CATALOG["inventory.low"](key="sku", seq=2), source="/x", cause=root)
    grandchild = new_event(CATALOG["stock.received"](key="sku", seq=3), source="/x", cause=child)
    assert child.causationid == root.id
    assert grandchild.causationid == child.id
    assert grandchild.correlationid == root.id


def test_fresh_event_ids_sort_in_the_order_they_were_made() -> None:
    # Inboxes and the outbox index events by id: ids made in order land at the end
    # of the index (see new_event_id). Thousands are made within one millisecond here.
    ids = [sample("order.created", f"o-{n}", n).id for n in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert {uuid.UUID(event_id).version for event_id in ids} == {7}


def test_derived_ids_are_deterministic_and_distinct() -> None:
    assert derived_id("inventory", "e1") == derived_id("inventory", "e1")
    assert derived_id("inventory", "e1") != derived_id("inventory", "e2")
    assert derived_id("a", "bc") != derived_id("ab", "c")


# -- property-based: the parser returns an event or raises MalformedEvent, nothing else --


def check_total(body: bytes) -> None:
    try:
        event = codec.decode(body)
    except MalformedEvent as exc:
        assert exc.code in {reason.value for reason in Reason}
    else:
        assert event.type in CATALOG


@given(st.binary(max_size=2048))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes(body: bytes) -> None:
    check_total(body)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid event with a few attributes removed, replaced or retyped."""
    value: dict[str, Any] = json.loads(json.dumps(VALID))
    value["type"] = draw(st.sampled_from([*CATALOG, "order.unknown", ""]))
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["root", "data"]))
        holder = (
            value if target == "root" or not isinstance(value.get("data"), dict) else value["data"]
        )
        key = draw(st.sampled_from([*sorted(holder), "extra"]))
        if draw(st.booleans()):
            holder.pop(key, None)
        else:
            holder[key] = draw(json_values)
    text = json.dumps(value, allow_nan=True)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut]
    return text.encode("utf-8", "surrogatepass")


@given(near_valid())
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_near_valid_events(body: bytes) -> None:
    check_total(body)


def test_the_same_bytes_handed_to_several_services_decode_once() -> None:
    # In process every service of a host gets the same body object: one decode for all.
    body = encode(VALID)
    first = codec.decode(body)
    assert codec.decode(body) is first
    # Equal bytes in another object (another delivery) are decoded anew...
    assert codec.decode(bytes(bytearray(body))) is not first
    # ...and a remembered body still answers for its properties and content type.
    with pytest.raises(MalformedEvent) as mismatch:
        codec.decode(body, message_type="order.cancelled")
    assert mismatch.value.code == Reason.PROPERTY_MISMATCH
    with pytest.raises(MalformedEvent) as wrong:
        codec.decode(body, content_type="text/plain")
    assert wrong.value.code == Reason.WRONG_CONTENT_TYPE
    bad = encode({**VALID, "specversion": "0.3"})
    for _ in range(2):  # a refusal is never remembered as an event
        with pytest.raises(MalformedEvent):
            codec.decode(bad)
