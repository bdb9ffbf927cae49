"""The OpenAPI document as the API answers: errors as problem documents, and the
bearer scheme on every path that needs a token."""

from __future__ import annotations

from typing import Any

from consumers.api.guards import PUBLIC
from consumers.api.problems import PROBLEM_JSON, Problem

_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def documented(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    # FastAPI's own error shapes: the API never answers them.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if str(status).startswith(("4", "5")):
                    response["content"] = dict(_PROBLEM)
            if path not in PUBLIC:
                operation["security"] = [{"bearer": []}]
                responses.setdefault("401", {"description": "Unauthorized", "content": _PROBLEM})
    return document
