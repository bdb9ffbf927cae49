"""Retry policy and the in-process broker's own RabbitMQ-like rules."""

from __future__ import annotations

import pytest

from agentbus.clock import VirtualClock
from agentbus.errors import BrokerUnavailable, Unroutable
from agentbus.retry import RetryPolicy, dead_letter_queue, topology
from agentbus.transport.base import Delivery, Message, QueueSpec
from agentbus.transport.memory import InMemoryBroker


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, factor=3.0, max_delay=20.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 20.0, 20.0]


def test_topology_has_one_delay_queue_per_distinct_delay_and_a_dlq() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, factor=2.0, max_delay=2.0)
    specs = topology("inventory", ("order.created",), policy)
    names = [spec.name for spec in specs]
    assert names == [
        "inventory",
        "inventory.retry.1000ms.quorum",
        "inventory.retry.2000ms.quorum",
        "inventory.dlq",
    ]
    main = specs[0]
    assert main.dead_letter_to == dead_letter_queue("inventory")
    assert main.bindings == ("order.created",)
    assert all(spec.dead_letter_to == "inventory" for spec in specs[1:3])
    assert [spec.message_ttl_ms for spec in specs[1:3]] == [1000, 2000]
    # Replicated like the main queue, so that a cluster can lose the node it started on.
    assert all(spec.kind == "quorum" for spec in specs)


def test_classic_queues_keep_their_delay_queues_names() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=1.0)
    specs = topology("inventory", ("order.created",), policy, kind="classic")
    assert [(s.name, s.kind) for s in specs[1:]] == [
        ("inventory.retry.1000ms", "classic"),
        ("inventory.dlq", "classic"),
    ]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": 0}, {"factor": 0.5}])
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_quorum_delivery_limit_dead_letters_a_message_that_keeps_coming_back() -> None:
    broker = InMemoryBroker(clock=VirtualClock())
    transport = broker.connect()
    await transport.start()
    await transport.declare(
        [
            QueueSpec("work", bindings=("x",), dead_letter_to="work.dlq", delivery_limit=2),
            QueueSpec("work.dlq"),
        ]
    )
    await transport.publish(Message(b"{}", "x"))
    for _ in range(3):
        delivery = await transport.get("work")
        assert delivery is not None
        await delivery.reject(requeue=True)
    assert await transport.depth("work") == 0
    assert await transport.depth("work.dlq") == 1
    letter = await transport.get("work.dlq")
    assert letter is not None
    assert letter.message.headers["x-first-death-reason"] == "delivery_limit"


async def test_ttl_queue_dead_letters_back_when_the_clock_says_so() -> None:
    clock = VirtualClock()
    broker = InMemoryBroker(clock=clock)
    transport = broker.connect()
    await transport.start()
    await transport.declare(
        [
            QueueSpec("main"),
            QueueSpec("main.wait", kind="classic", message_ttl_ms=5000, dead_letter_to="main"),
        ]
    )
    await transport.send_to_queue("main.wait", Message(b"{}", "main.wait"))
    await clock.advance(4.9)
    assert await transport.depth("main") == 0
    await clock.advance(0.2)
    assert await transport.depth("main") == 1
    assert await transport.depth("main.wait") == 0


async def test_unknown_delivery_tag_closes_the_channel_as_rabbitmq_does() -> None:
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()
    await transport.declare([QueueSpec("q", bindings=("#",))])
    await transport.publish(Message(b"{}", "a.b"))
    delivery: Delivery | None = await transport.get("q")
    assert delivery is not None
    await delivery.ack()
    with pytest.raises(BrokerUnavailable):
        await delivery.ack()


async def test_unroutable_and_closed() -> None:
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()
    with pytest.raises(Unroutable):
        await transport.publish(Message(b"{}", "nobody.listens"))
    with pytest.raises(Unroutable):
        await transport.send_to_queue("missing", Message(b"{}", "missing"))
    await transport.close()
    with pytest.raises(BrokerUnavailable):
        await transport.publish(Message(b"{}", "a"))


async def test_redeclare_with_other_arguments_is_refused() -> None:
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()
    await transport.declare([QueueSpec("q", kind="quorum")])
    with pytest.raises(ValueError, match="different arguments"):
        await transport.declare([QueueSpec("q", kind="classic")])


async def test_routes_follow_every_declaration_and_deletion() -> None:
    # Routes are remembered per routing key: a queue declared, widened or deleted
    # after a message went by must still change where the next one goes.
    broker = InMemoryBroker()
    transport = broker.connect()
    await transport.start()

    def message(key: str) -> Message:
        return Message(body=b"{}", routing_key=key, message_id=key, type=key, headers={})

    await transport.declare([QueueSpec("a", bindings=("order.*",))])
    await transport.publish(message("order.created"))
    with pytest.raises(Unroutable):
        await transport.publish(message("stock.received"))
    await transport.declare([QueueSpec("b", bindings=("#",))])
    await transport.publish(message("stock.received"))
    await transport.publish(message("order.created"))
    assert await transport.depth("a") == 2
    assert await transport.depth("b") == 2
    await transport.declare([QueueSpec("a", bindings=("stock.*",))])  # one more binding
    await transport.publish(message("stock.received"))
    assert await transport.depth("a") == 3
    await transport.delete_queue("b")
    await transport.publish(message("order.created"))
    assert await transport.depth("a") == 4
    await transport.delete_queue("a")
    with pytest.raises(Unroutable):
        await transport.publish(message("order.created"))
