"""An AsyncAPI 3.0 document of the exchange, its event types and its services.

Generated from code: the catalog and the services' declarations are passed in (the
platform never imports an application's events), and the envelope schema comes from
the codec's own model, so the document cannot drift from what is on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agentbus.envelope import CONTENT_TYPE, Event
from agentbus.errors import ConfigurationError
from agentbus.topic import topic_matches
from agentbus.transport.amqp_addresses import amqp_addresses

__all__ = ["ASYNCAPI_VERSION", "Server", "ServiceInfo", "amqp_server", "build_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_SCHEMAS = "#/components/schemas/"
# Class names never contain a dot, so this key cannot collide with a catalog model.
_ENVELOPE = "cloudevents.envelope"
_DESCRIPTIONS = {
    "id": "Producer-chosen and unique: the dedup key.",
    "source": "URI-reference of the producer, such as /services/inventory.",
    "time": "RFC 3339.",
    "subject": "The entity key (a SKU or an order id); per-key ordering follows it.",
    "correlationid": "Id of the first event of the business flow.",
    "causationid": "Id of the event that caused this one.",
    "traceparent": "W3C trace context of the producer.",
}


@dataclass(frozen=True, slots=True)
class Server:
    """A configured broker, as the document lists it: where to connect, never who as."""

    name: str  # its key under `servers`
    protocol: str  # `amqp`, `amqps`, `kafka`, `kafka-secure`
    host: str  # host:port
    protocol_version: str | None = None
    vhost: str | None = None  # AMQP's virtual host
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"host": self.host, "protocol": self.protocol}
        if self.protocol_version:
            found["protocolVersion"] = self.protocol_version
        if self.description:
            found["description"] = self.description
        return found


def amqp_server(url: str, name: str = "rabbitmq") -> Server:
    """The RabbitMQ server of an `amqp://` or `amqps://` URL, its virtual host read as the
    client reads it (`/` when the path is empty or `/`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"the broker URL cannot be read: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError("the broker URL must start with amqp:// or amqps://")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = port or (5671 if parts.scheme == "amqps" else 5672)
    vhost = "/" if parts.path in ("", "/") else unquote(parts.path[1:])
    return Server(
        name=name,
        protocol=parts.scheme,
        host=f"{host}:{port}",
        protocol_version="0.9.1",
        vhost=vhost,
        description=f"RabbitMQ, virtual host {vhost!r}",
    )


def amqp_servers(value: str) -> list[Server]:
    """One server per address of `AMQP_URL` (a cluster's nodes): `rabbitmq`, `rabbitmq-2`..."""
    return [
        amqp_server(url, "rabbitmq" if n == 1 else f"rabbitmq-{n}")
        for n, url in enumerate(amqp_addresses(value), start=1)
    ]


class ServiceInfo(Protocol):
    """What the document needs to know of a service."""

    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def subscribes(self) -> Sequence[str]:
        """Event types or AMQP topic patterns (`*`, `#`) the queue is bound by."""
        ...

    @property
    def publishes(self) -> Sequence[str]: ...


def build_asyncapi(
    catalog: Mapping[str, type[BaseModel]],
    services: Sequence[ServiceInfo],
    *,
    exchange: str = "agentbus.events",
    title: str = "agentbus",
    version: str = "1",
    servers: Sequence[Server] = (),
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document: one channel and message per type, operations per service.

    `servers` are the configured brokers; the channels' exchange lives in the virtual
    host of the (first) AMQP one. Raises ValueError when a service publishes a type
    outside the catalog, or binds by a pattern that matches none of it, or two servers
    share a name: the document would be silently incomplete or wrong.
    """
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise ValueError(f"servers named twice: {names}")
    vhost = next((s.vhost for s in servers if s.vhost is not None), "/")
    event_types = sorted(catalog)
    schemas = _schemas(catalog)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for event_type in event_types:
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": _SCHEMAS + _pointer(event_type)},
            "bindings": {
                "amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING_VERSION}
            },
        }
        channels[event_type] = {
            "address": event_type,
            "title": event_type,
            "messages": {event_type: {"$ref": f"#/components/messages/{_pointer(event_type)}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                f"CloudEvents 1.0 in structured JSON mode on the topic exchange {exchange!r}; "
                "the routing key of every event is its type. Consumers also accept binary "
                "mode (attributes in ce- headers, the data as the body)."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
    }
    if servers:
        document["servers"] = {server.name: server.to_json() for server in servers}
    return {
        **document,
        "channels": channels,
        "operations": _operations(event_types, services),
        "components": {"schemas": schemas, "messages": messages},
    }


def _pointer(key: str) -> str:
    """`key` as one JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _schemas(catalog: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    # One pass over every model, so nested models that share a name get distinct keys.
    refs, top = models_json_schema(
        [(model, "validation") for model in catalog.values()],
        ref_template=_SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    envelope = Event.model_json_schema(mode="validation", ref_template=_SCHEMAS + "{model}")
    properties: dict[str, Any] = envelope["properties"]
    for name, text in _DESCRIPTIONS.items():
        if name in properties:
            properties[name] = {**properties[name], "description": text}
    # The generic model types `data` as a bare model; each message narrows it below.
    properties["data"] = {"type": "object"}
    envelope.pop("$defs", None)
    schemas[_ENVELOPE] = envelope
    envelope["title"] = "CloudEvents 1.0 envelope"
    for event_type, model in catalog.items():
        # The type names its event schema: a component key may hold dots, a class name not.
        if event_type in schemas:
            raise ValueError(f"schema name {event_type!r} is taken twice")
        schemas[event_type] = {
            "title": f"{event_type} event",
            "allOf": [{"$ref": _SCHEMAS + _ENVELOPE}],
            "properties": {"type": {"const": event_type}, "data": refs[(model, "validation")]},
        }
    return dict(sorted(schemas.items()))


def _operations(event_types: Sequence[str], services: Sequence[ServiceInfo]) -> dict[str, Any]:
    known = set(event_types)
    operations: dict[str, Any] = {}

    def add(key: str, operation: dict[str, Any]) -> None:
        if key in operations:
            raise ValueError(f"operation {key!r} is declared twice (two services named alike?)")
        operations[key] = operation

    for service in services:
        received: set[str] = set()
        for pattern in service.subscribes:
            matched = {t for t in event_types if topic_matches(pattern, t)}
            if not matched:
                raise ValueError(f"{service.name} binds {pattern!r}, which matches no event type")
            received |= matched
        unknown = sorted(set(service.publishes) - known)
        if unknown:
            raise ValueError(f"{service.name} publishes types outside the catalog: {unknown}")
        for event_type in sorted(received):
            add(
                f"{service.name}.receive.{event_type}",
                {
                    **_operation("receive", event_type, service.name),
                    "summary": f"{service.name} consumes {event_type} from queue "
                    f"{service.queue!r}.",
                    "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
                },
            )
        for event_type in sorted(set(service.publishes)):
            add(
                f"{service.name}.send.{event_type}",
                {
                    **_operation("send", event_type, service.name),
                    "summary": f"{service.name} publishes {event_type}.",
                    # Persistent, and unroutable is an error rather than a silent drop.
                    "bindings": {
                        "amqp": {
                            "deliveryMode": 2,
                            "mandatory": True,
                            "bindingVersion": AMQP_BINDING_VERSION,
                        }
                    },
                },
            )
    return operations


def _operation(action: str, event_type: str, service: str) -> dict[str, Any]:
    channel = f"#/channels/{_pointer(event_type)}"
    return {
        "action": action,
        "channel": {"$ref": channel},
        "messages": [{"$ref": f"{channel}/messages/{_pointer(event_type)}"}],
        "tags": [{"name": service}],
    }
