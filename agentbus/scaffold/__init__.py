"""`agentbus new-agent NAME`: a working agent to start from, with its test and eval case.

It writes, under the project root: `agents/<pkg>/` (the agent, its suggestion
model), `tools/<pkg>.py` (a read-only tool), `prompts/<name>/v1.txt`,
`tests/agents/test_<pkg>.py` and `evals/cases/<pkg>.json` (an eval case). The
generated tests pass as generated; the sample trigger in the eval case is the
smallest valid instance of the trigger's data model, to be replaced by real ones.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ValidationError

from agentbus.errors import ConfigurationError

__all__ = ["sample_of", "scaffold"]

TEMPLATES = Path(__file__).parent / "templates"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def scaffold(
    root: Path, name: str, trigger: str, catalog: Mapping[str, type[BaseModel]]
) -> list[Path]:
    """Write the agent's files under `root`; return them. Refuses to overwrite anything."""
    if not NAME.match(name) or len(name) > 40:
        raise ConfigurationError(
            f"agent name {name!r}: use lowercase words joined by hyphens, e.g. slow-mover"
        )
    if trigger not in catalog:
        raise ConfigurationError(
            f"unknown trigger {trigger!r}: pick an event type of the catalog "
            f"({', '.join(sorted(catalog))})"
        )
    pkg = name.replace("-", "_")
    data = catalog[trigger]
    values = {
        "name": name,
        "pkg": pkg,
        "Class": "".join(part.title() for part in name.split("-")),
        "trigger": trigger,
        # The agent is typed by its trigger's data: the class, from where the catalog has it.
        "Trigger": data.__name__,
        "trigger_module": _importable_from(data),
        "suggestion_type": f"{pkg}.suggested",
    }
    values["suggest"] = _signature(
        "suggest",
        f"state: State, event: Event[{values['Trigger']}], run: Run",
        f"suggestion.{values['Class']}Suggested",
    )
    if values["suggestion_type"] in catalog:
        raise ConfigurationError(f"the catalog already has {values['suggestion_type']!r}")
    files = {
        f"agents/{pkg}/__init__.py": "agent_init.py",
        f"agents/{pkg}/agent.py": "agent.py",
        f"agents/{pkg}/suggestion.py": "suggestion.py",
        f"tools/{pkg}.py": "tool.py",
        f"prompts/{name}/v1.txt": "prompt.txt",
        f"tests/agents/test_{pkg}.py": "test.py",
    }
    taken = [path for path in [*files, f"evals/cases/{pkg}.json"] if (root / path).exists()]
    if taken:
        raise ConfigurationError(f"{', '.join(taken)} exist(s) already: nothing written")
    case = [{"trigger": sample_of(catalog[trigger]), "expect": {"level": "high"}}]
    written: list[Path] = []
    for relative, template in files.items():
        text = Template((TEMPLATES / f"{template}.tmpl").read_text()).substitute(values)
        written.append(_write(root / relative, text))
    written.append(_write(root / f"evals/cases/{pkg}.json", json.dumps(case, indent=2) + "\n"))
    for package in ("tests", "tests/agents", "agents", "tools"):
        marker = root / package / "__init__.py"
        if not marker.exists():
            written.append(_write(marker, ""))
    return written


def _importable_from(model: type[BaseModel]) -> str:
    """The module the generated agent imports its trigger's class from: the catalog's
    package when it exports the class (`events`), else the class's own module."""
    package = model.__module__.partition(".")[0]
    try:
        exported = getattr(importlib.import_module(package), model.__name__, None)
    except ImportError:
        exported = None
    return package if exported is model else model.__module__


def _signature(name: str, parameters: str, returns: str) -> str:
    """A def line as `ruff format` lays it out: on one line when it fits in 100 columns."""
    line = f"def {name}({parameters}) -> {returns}:"
    return line if len(line) <= 100 else f"def {name}(\n    {parameters}\n) -> {returns}:"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sample_of(model: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid data for `model`, made from its JSON Schema and checked."""
    schema = model.model_json_schema()
    sample = _minimal(schema, schema.get("$defs", {}))
    try:
        model.model_validate(sample)
    except ValidationError as exc:
        raise ConfigurationError(
            f"no sample for {model.__name__} could be made ({exc.error_count()} errors): "
            "choose another trigger, or write the sample into the eval case by hand"
        ) from None
    if not isinstance(sample, dict):
        raise ConfigurationError(f"{model.__name__} is not an object")
    return sample


# Strings tried, in order, against a field's pattern.
_CANDIDATES = ("x", "EUR", "ABC", "a1", "2026-01-01", "x@example.com")


def _minimal(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    if "$ref" in schema:
        return _minimal(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return _minimal(options[0], defs) if options else None
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _minimal(properties[key], defs) for key in schema.get("required", [])}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [_minimal(schema.get("items", {}), defs) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return int(max(low, 1)) if kind == "integer" else float(max(low, 1))
    if kind == "boolean":
        return False
    return None


def _string(schema: Mapping[str, Any]) -> str:
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    pattern = schema.get("pattern")
    if pattern:
        for candidate in _CANDIDATES:
            if re.fullmatch(pattern, candidate):
                return candidate
    return "x" * max(1, int(schema.get("minLength", 1)))
