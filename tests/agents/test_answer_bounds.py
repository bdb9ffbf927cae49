"""Every agent's answer schema is bounded, so a model that repeats itself is stopped by
the schema, and the guards still check what comes back in code."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agentbus.llm.openai_model import strict_json_schema
from agents.restock.proposal import MAX_EVIDENCE, MAX_RATIONALE, RestockProposal
from agents.substitute.proposal import MAX_RANKED, SubstituteRanking

ANSWERS: list[type[BaseModel]] = [RestockProposal, SubstituteRanking]


def unbounded(node: Any, where: str = "answer") -> list[str]:
    """Places in a JSON schema where a string or a list has no upper bound."""
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            found.append(where)
        if kind == "array" and "maxItems" not in node:
            found.append(where)
        for key, value in node.items():
            found += unbounded(value, f"{where}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += unbounded(value, f"{where}[{n}]")
    return found


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: a.__name__)
def test_every_string_and_list_of_an_answer_has_a_bound(answer: type[BaseModel]) -> None:
    assert unbounded(strict_json_schema(answer)) == []


def test_an_answer_past_its_bounds_does_not_validate() -> None:
    good = {
        "quantity": 10,
        "urgency": "low",
        "rationale": "ok",
        "confidence": 0.5,
        "evidence": ["e1"],
    }
    RestockProposal.model_validate(good)
    for wrong in (
        {"rationale": "x" * (MAX_RATIONALE + 1)},
        {"evidence": ["e"] * (MAX_EVIDENCE + 1)},
        {"evidence": ["e" * 65]},
        {"quantity": 0},
        {"confidence": float("nan")},
    ):
        with pytest.raises(ValidationError):
            RestockProposal.model_validate({**good, **wrong})
    # A confidence out of 0..1 is the guard's to clamp (a grammar cannot bound a JSON
    # number, so a small model's 1.2 would otherwise cost its whole answer), while the
    # schema the model reads still names the bounds.
    assert RestockProposal.model_validate({**good, "confidence": 1.5}).confidence == 1.5
    confidence = strict_json_schema(RestockProposal)["properties"]["confidence"]
    assert (confidence["minimum"], confidence["maximum"]) == (0.0, 1.0)
    with pytest.raises(ValidationError):
        SubstituteRanking.model_validate({"ranking": ["A"] * (MAX_RANKED + 1)})
