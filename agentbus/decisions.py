"""What deciding an agent's suggestion emits, as the agent declares it.

Reviewing tools (a console, an HTTP API) decide any agent's suggestions through
this declaration alone: they never learn an agent's event types or fields, so a
new agent is reviewable the day it is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["DecisionInvalid", "Decisions"]


class DecisionInvalid(ValueError):
    """A decision the agent's declaration refuses: a change it does not allow, a bad value."""


Approve = Callable[[Mapping[str, Any], str, str | None, Any], BaseModel]
Reject = Callable[[Mapping[str, Any], str, str], BaseModel]


@dataclass(frozen=True)
class Decisions:
    """An agent's pair of decision events and how a suggestion becomes either.

    `approve(suggestion, reviewer, note, changes)` and `reject(suggestion, reviewer,
    reason)` get the suggestion's data as received; `changes` is an instance of the
    `changes` model: what a reviewer may change on approval (its fields optional).
    """

    suggestion_type: str
    id_field: str
    approved: type[BaseModel]
    rejected: type[BaseModel]
    approve: Approve
    reject: Reject
    changes: type[BaseModel] | None = None

    @property
    def event_types(self) -> tuple[str, str]:
        return (_type_of(self.approved), _type_of(self.rejected))

    def approval(
        self,
        suggestion: Mapping[str, Any],
        reviewer: str,
        note: str | None,
        changes: Mapping[str, Any],
        *,
        as_text: bool = False,
    ) -> BaseModel:
        """The approval; `as_text`: the changes are strings (an HTML form) to parse."""
        allowed = set(self.changes.model_fields) if self.changes is not None else set()
        unknown = sorted(set(changes) - allowed)
        if unknown:
            may = ", ".join(sorted(allowed)) or "nothing"
            raise DecisionInvalid(
                f"a reviewer may not change {', '.join(unknown)} of a {self.suggestion_type}"
                f" suggestion (may change: {may})"
            )
        try:
            parsed = None
            if self.changes is not None:
                parse = (
                    self.changes.model_validate_strings if as_text else self.changes.model_validate
                )
                parsed = parse(dict(changes))
            return self.approve(suggestion, reviewer, note, parsed)
        except ValidationError as exc:
            raise DecisionInvalid(_explain(exc)) from None

    def rejection(self, suggestion: Mapping[str, Any], reviewer: str, reason: str) -> BaseModel:
        if not reason.strip():
            raise DecisionInvalid("say why the suggestion is rejected")
        try:
            return self.reject(suggestion, reviewer, reason)
        except ValidationError as exc:
            raise DecisionInvalid(_explain(exc)) from None


def _type_of(model: type[BaseModel]) -> str:
    event_type: str = getattr(model, "event_type")  # noqa: B009 - a catalog ClassVar
    return event_type


def _explain(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'value'}: {error['msg']}" for error in exc.errors()
    )
