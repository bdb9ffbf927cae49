"""JSON Schema documents for the `data` of each event type, generated from a catalog.

The catalog is passed in: the platform never imports an application's events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["DIALECT", "data_schema", "schema_id", "write_schemas"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# An event type becomes a file name: dot-separated words, nothing that leaves the directory.
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def data_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema of an event's `data` as consumers validate it (nested models in `$defs`)."""
    return model.model_json_schema(mode="validation")


def schema_id(event_type: str) -> str:
    """The `$id` of the data schema of `event_type`: an absolute URI that names the type."""
    return f"urn:agentbus:event:{event_type}"


def write_schemas(catalog: Mapping[str, type[BaseModel]], out_dir: Path) -> list[Path]:
    """Write one `<type>.schema.json` per event type into `out_dir`; return the files, sorted."""
    for event_type in catalog:
        if not _EVENT_TYPE.fullmatch(event_type):
            raise ValueError(f"event type {event_type!r} cannot name a schema file")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for event_type, model in sorted(catalog.items()):
        schema = {
            "$schema": DIALECT,
            "$id": schema_id(event_type),
            **data_schema(model),
            "title": event_type,
        }
        path = out_dir / f"{event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
