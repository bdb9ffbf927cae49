"""JSON Schema documents for the data of each event type, generated from the catalog."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def data_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema of an event's `data`, as consumers validate it."""
    return model.model_json_schema(mode="validation")


def write_schemas(catalog: Mapping[str, type[BaseModel]], out_dir: Path) -> list[Path]:
    """One `<type>.schema.json` per event type; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, model in sorted(catalog.items()):
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:agentbus:event:{event_type}",
            **data_schema(model),
            "title": event_type,
        }
        path = out_dir / f"{event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
