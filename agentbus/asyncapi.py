"""An AsyncAPI 3.0 document of the exchange, its events and its services, from the code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from agentbus.envelope import CONTENT_TYPE
from agentbus.jsonschema import data_schema
from agentbus.topic import topic_matches


class ServiceInfo(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def subscribes(self) -> Sequence[str]: ...

    @property
    def publishes(self) -> Sequence[str]: ...

    @property
    def description(self) -> str: ...


def _key(event_type: str) -> str:
    return event_type.replace(".", "_")


def _envelope(event_type: str) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {**text, "description": "Producer-chosen, unique: the dedup key."},
            "source": {**text, "format": "uri-reference"},
            "type": {"const": event_type},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "subject": {**text, "description": "The entity key; per-key order follows it."},
            "dataschema": {"type": "string", "format": "uri"},
            "correlationid": {**text, "description": "Id of the first event of the flow."},
            "causationid": {**text, "description": "Id of the event that caused this one."},
            "traceparent": {"type": "string", "description": "W3C trace context."},
            "data": {"$ref": f"#/components/schemas/{_key(event_type)}_data"},
        },
    }


def build_asyncapi(
    catalog: Mapping[str, type[BaseModel]],
    services: Sequence[ServiceInfo],
    *,
    exchange: str = "agentbus.events",
    title: str = "agentbus",
    version: str = "1",
    host: str = "localhost:5672",
) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type, model in sorted(catalog.items()):
        key = _key(event_type)
        schema = data_schema(model)
        # Nested definitions move up to components so every $ref resolves there.
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[f"{key}_data"] = _rebase(schema)
        schemas[f"{key}_event"] = _envelope(event_type)
        messages[key] = {
            "name": event_type,
            "title": event_type,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": f"#/components/schemas/{key}_event"},
            "bindings": {"amqp": {"messageType": event_type, "deliveryMode": 2}},
        }
        channels[key] = {
            "address": event_type,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
    operations: dict[str, Any] = {}
    for service in services:
        received = sorted(
            {t for pattern in service.subscribes for t in catalog if topic_matches(pattern, t)}
        )
        for event_type in received:
            operations[f"{service.name}.receive.{event_type}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_key(event_type)}"},
                "summary": f"{service.name} consumes {event_type} from queue {service.queue}",
                "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
            }
        for event_type in sorted(set(service.publishes) & set(catalog)):
            operations[f"{service.name}.send.{event_type}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_key(event_type)}"},
                "summary": f"{service.name} publishes {event_type}",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": "CloudEvents 1.0 in structured JSON mode on one topic exchange; "
            "the routing key is the event type.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"broker": {"host": host, "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _rebase(schema: Any) -> Any:
    """Point pydantic's local `#/$defs/X` references at `#/components/schemas/X`."""
    if isinstance(schema, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/")
                if key == "$ref" and isinstance(value, str)
                else _rebase(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema
