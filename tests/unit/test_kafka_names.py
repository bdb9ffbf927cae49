"""Kafka subscribes by regex: each AMQP binding pattern must pick the topics RabbitMQ
would route to it, under the prefix only, and never a dead-letter topic."""

from __future__ import annotations

import re

import pytest

from agentbus.topic import topic_matches
from agentbus.transport.kafka_names import subscription_regex

PATTERNS = ["#", "*", "order.*", "order.#", "#.received", "inventory.#.received", "*.#", "#.#.low"]
TYPES = [
    "order",
    "order.created",
    "order.created.v2",
    "inventory.low",
    "inventory.stock.received",
    "stock.received",
    "received",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_pattern_picks_the_topics_amqp_would_route_to_it(pattern: str) -> None:
    regex = re.compile(subscription_regex("shop1.", (pattern,)))
    for event_type in TYPES:
        assert bool(regex.match(f"shop1.{event_type}")) == topic_matches(pattern, event_type), (
            pattern,
            event_type,
        )


def test_other_prefixes_and_dead_letter_topics_are_never_subscribed() -> None:
    regex = re.compile(subscription_regex("shop1.", ("#", "order.created")))
    assert regex.match("shop1.order.created")
    assert not regex.match("shop2.order.created")
    assert not regex.match("shop1.inventory.dlq")


def test_several_bindings_make_one_regex() -> None:
    regex = re.compile(subscription_regex("", ("order.created", "stock.*")))
    assert regex.match("order.created")
    assert regex.match("stock.received")
    assert not regex.match("order.cancelled")


def test_the_queue_registry_is_never_subscribed() -> None:
    from agentbus.transport.kafka_names import QUEUES_TOPIC

    regex = re.compile(subscription_regex("shop1.", ("#",)))
    assert not regex.match(f"shop1.{QUEUES_TOPIC}")
