"""The OpenTelemetry semantic conventions agentbus's spans follow, in one place.

Messaging spans follow the messaging conventions and, on RabbitMQ, their RabbitMQ
part (both in development status; attribute names as in semantic conventions 1.4x):

- a PRODUCER span per published event, named `publish {exchange}:{routing key}`;
- a CONSUMER span per handled event, named `process {exchange}:{routing key}:{queue}`:
  a child of the producer's context (which the conventions allow when a span
  processes one message) and linked to it, as they ask of every process span;
- `messaging.destination.name` is the span name's destination; the RabbitMQ routing
  key and delivery tag go in `messaging.rabbitmq.*`, on RabbitMQ only;
- `server.address` and `server.port` where there is a server; `error.type` on failure.

On Kafka, their Kafka part: the destination is the topic (the transport's prefix, which
it gives as its exchange, and the event type) on both sides, named `publish {topic}` and
`process {topic}`; the consumer group is `messaging.consumer.group.name`, and the
record's offset `messaging.kafka.offset`.

Agent runs follow the GenAI agent conventions: an `invoke_agent {agent}` span with
the provider, and the model requested when the agent has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.util.types import AttributeValue

from agentbus.transport.base import BrokerInfo

if TYPE_CHECKING:
    from agentbus.llm.base import Model

__all__ = [
    "POLICY_PROVIDER",
    "ProcessSpans",
    "destination",
    "invoke_agent_attributes",
    "publish_span",
]

Attributes = dict[str, AttributeValue]

# `gen_ai.provider.name` of a run decided by the agent's own offline policy, no model.
POLICY_PROVIDER = "agentbus.policy"


def destination(exchange: str, routing_key: str, queue: str | None = None) -> str:
    """`messaging.destination.name` on RabbitMQ: `{exchange}:{routing key}` for a publish,
    `{exchange}:{routing key}:{queue}` for a consumer; empty parts are left out, and a
    queue named as its routing key is said once."""
    parts = [part for part in (exchange, routing_key) if part]
    if queue and queue != routing_key:
        parts.append(queue)
    return ":".join(parts) or "amq.default"


def _kafka_topic(broker: BrokerInfo, exchange: str, routing_key: str) -> str | None:
    return f"{exchange}{routing_key}" if broker.system == "kafka" else None


def _server(broker: BrokerInfo, attributes: Attributes) -> Attributes:
    if broker.address is not None:
        attributes["server.address"] = broker.address
        if broker.port is not None:
            attributes["server.port"] = broker.port
    return attributes


def publish_span(
    broker: BrokerInfo,
    exchange: str,
    routing_key: str,
    message_id: str,
    conversation_id: str | None = None,
) -> tuple[str, Attributes]:
    """The name and attributes of the PRODUCER span of one published event."""
    where = _kafka_topic(broker, exchange, routing_key) or destination(exchange, routing_key)
    attributes: Attributes = {
        "messaging.system": broker.system,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": where,
        "messaging.message.id": message_id,
    }
    if broker.system == "rabbitmq" and routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    if conversation_id:
        attributes["messaging.message.conversation_id"] = conversation_id
    return f"publish {where}", _server(broker, attributes)


class ProcessSpans:
    """The names and attributes of one consumer's process spans.

    What does not change between deliveries of one event type is built once: every
    attribute is copied and checked per span, and a consumer makes thousands a second.
    """

    def __init__(self, broker: BrokerInfo, exchange: str, queue: str) -> None:
        self._broker = broker
        self._exchange = exchange
        self._queue = queue
        self._rabbitmq = broker.system == "rabbitmq"
        self._kafka = broker.system == "kafka"
        self._by_type: dict[str, tuple[str, Attributes]] = {}

    def _static(self, routing_key: str) -> tuple[str, Attributes]:
        found = self._by_type.get(routing_key)
        if found is None:
            where = _kafka_topic(self._broker, self._exchange, routing_key) or destination(
                self._exchange, routing_key, self._queue
            )
            attributes: Attributes = {
                "messaging.system": self._broker.system,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": where,
            }
            if self._kafka:
                attributes["messaging.consumer.group.name"] = f"{self._exchange}{self._queue}"
            if self._rabbitmq and routing_key:
                attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
            found = self._by_type[routing_key] = (
                f"process {where}",
                _server(self._broker, attributes),
            )
        return found

    def span(
        self,
        routing_key: str,
        message_id: str,
        *,
        conversation_id: str | None,
        delivery_tag: int | None,
    ) -> tuple[str, Attributes]:
        name, static = self._static(routing_key)
        attributes = {**static, "messaging.message.id": message_id}
        if conversation_id:
            attributes["messaging.message.conversation_id"] = conversation_id
        if self._rabbitmq and delivery_tag:
            attributes["messaging.rabbitmq.message.delivery_tag"] = delivery_tag
        elif self._kafka and delivery_tag is not None:
            attributes["messaging.kafka.offset"] = delivery_tag
        return name, attributes


def invoke_agent_attributes(
    agent: str, conversation_id: str, model: Model | None
) -> tuple[str, Attributes]:
    """The name and attributes of an agent run's span; `model` is None when the agent's
    offline policy decides."""
    attributes: Attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": POLICY_PROVIDER if model is None else model.provider,
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": conversation_id,
    }
    if model is not None and model.name:
        attributes["gen_ai.request.model"] = model.name
    return f"invoke_agent {agent}", attributes
