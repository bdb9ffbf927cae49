"""How long an answer that keeps its schema can be: the token limit a call needs so
that no valid answer is cut short.

A schema whose strings and lists all have bounds (`maxLength`, `maxItems`, `enum`)
allows answers up to a size that can be worked out. A small model that repeats
itself fills every string to its bound: SmolLM2-135M wrote a 1,000-character
rationale of `1.75, 1.75, ...` and twelve 64-character evidence strings, 1,115
tokens, valid, and cut at a limit of 1,024 one time in ten. The count is in
characters, which bounds tokens for ASCII text (every token of a byte-level BPE
covers at least one byte); digits, which many tokenizers split one by one, come
close to it.
"""

from __future__ import annotations

import json
from typing import Any

NUMBER = 24  # characters: the longest repr of a double (e.g. -2.2250738585072014e-308)
LAYOUT = 8  # characters per value: a newline and indentation, as pretty-printed answers have


def longest_answer(schema: dict[str, Any]) -> int | None:
    """The most characters an answer valid under the strict JSON `schema` can take
    (strings at their bounds, each value laid out on a line of its own), or None
    when some string or list has no bound."""
    try:
        return _longest(schema)
    except _Unbounded:
        return None


class _Unbounded(Exception):
    pass


def _longest(node: Any) -> int:
    if not isinstance(node, dict):
        raise _Unbounded
    if "enum" in node:
        return LAYOUT + max(len(json.dumps(v)) for v in node["enum"])
    if "const" in node:
        return LAYOUT + len(json.dumps(node["const"]))
    options = node.get("anyOf")
    if isinstance(options, list) and options:
        return max(_longest(option) for option in options)
    kind = node.get("type")
    if isinstance(kind, list):
        return max(_longest({**node, "type": k}) for k in kind)
    if kind == "object":
        properties: dict[str, Any] = node.get("properties", {})
        if node.get("additionalProperties", True) is not False:
            raise _Unbounded
        fields = sum(len(json.dumps(name)) + 2 + _longest(sub) for name, sub in properties.items())
        return LAYOUT + 2 + fields
    if kind == "array":
        items = node.get("maxItems")
        if not isinstance(items, int):
            raise _Unbounded
        return LAYOUT + 2 + items * (1 + _longest(node.get("items", {})))
    if kind == "string":
        length = node.get("maxLength")
        if not isinstance(length, int):
            raise _Unbounded
        return LAYOUT + 2 + length
    if kind == "integer":
        ends = [node[k] for k in ("minimum", "maximum") if isinstance(node.get(k), int)]
        return LAYOUT + (max(len(str(e)) for e in ends) if len(ends) == 2 else 20)
    if kind == "number":
        return LAYOUT + NUMBER
    if kind == "boolean":
        return LAYOUT + 5
    if kind == "null":
        return LAYOUT + 4
    raise _Unbounded
