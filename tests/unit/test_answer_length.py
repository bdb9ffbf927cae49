"""The longest answer a bounded schema allows, which the model adapter raises its
token limit to: an answer at every bound fits, and an unbounded schema has none."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agentbus.llm.answer_length import longest_answer
from agentbus.llm.openai_model import strict_json_schema
from agents.restock.proposal import MAX_EVIDENCE, MAX_ID, MAX_RATIONALE, RestockProposal
from agents.substitute.proposal import ranking_of


def at_every_bound() -> RestockProposal:
    """The answer a model that fills every string and list gives."""
    return RestockProposal(
        quantity=1_000_000,
        urgency="medium",
        rationale="1" * MAX_RATIONALE,
        confidence=0.12345678901234568,
        evidence=["f" * MAX_ID] * MAX_EVIDENCE,
    )


def test_an_answer_at_every_bound_fits_even_pretty_printed() -> None:
    longest = longest_answer(strict_json_schema(RestockProposal))
    assert longest is not None
    answer = at_every_bound().model_dump(mode="json")
    printed = json.dumps(answer, indent=4)
    assert len(printed) <= longest
    # and not far beyond it: the limit is also the cost of the worst answer
    assert longest <= 1.2 * len(printed)


def test_an_enum_counts_its_longest_member() -> None:
    short = longest_answer(strict_json_schema(ranking_of(["A", "B"])))
    long = longest_answer(strict_json_schema(ranking_of(["A", "B" * 40])))
    assert short is not None
    assert long is not None
    assert long - short == 3 * 39  # three ranked places, each 39 characters longer


def test_a_schema_with_an_unbounded_string_or_list_has_no_longest_answer() -> None:
    class Free(BaseModel):
        note: str

    class Many(BaseModel):
        ids: list[Annotated[str, Field(max_length=8)]]

    class Bounded(BaseModel):
        kind: Literal["a", "bb"]
        flag: bool
        ids: list[Annotated[str, Field(max_length=8)]] = Field(max_length=3)

    assert longest_answer(strict_json_schema(Free)) is None
    assert longest_answer(strict_json_schema(Many)) is None
    assert longest_answer(strict_json_schema(Bounded)) is not None
