"""A model that answers from a script: the test double of the model port."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from agentbus.llm.base import MalformedOutput, ModelError, ModelRequest, ModelResponse, Usage

Answer = (
    BaseModel
    | dict[str, Any]
    | BaseException
    | type[BaseException]
    | Callable[[ModelRequest], BaseModel]
)
"""One scripted answer: an output instance, a dict validated into the request's
output model, an exception (instance or class) to raise, or a function of the request."""


class ScriptedModel:
    """Answers requests in order from `answers`, recording every request in `requests`.

    A dict or an instance of another model that will not validate into the
    request's output model raises `MalformedOutput`, as a real model would after
    its retry. When the script runs out, `ModelError("script exhausted")`.
    """

    provider = "scripted"

    def __init__(
        self,
        answers: Iterable[Answer] = (),
        *,
        name: str = "scripted",
        usage: Usage | None = None,
    ) -> None:
        self.name = name
        self.usage = usage or Usage(100, 20)
        self.answers: deque[Answer] = deque(answers)
        self.requests: list[ModelRequest] = []

    def then(self, *answers: Answer) -> ScriptedModel:
        """Add answers to the end of the script."""
        self.answers.extend(answers)
        return self

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if not self.answers:
            raise ModelError("script exhausted")
        answer = self.answers.popleft()
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, type):
            raise answer("scripted")
        output = answer(request) if callable(answer) else answer
        return ModelResponse(
            output=_coerce(output, request.output),
            model=self.name,
            provider=self.provider,
            usage=self.usage,
            finish_reason="stop",
        )


def _coerce(answer: BaseModel | dict[str, Any], output: type[BaseModel]) -> BaseModel:
    if isinstance(answer, output):
        return answer
    data = answer.model_dump() if isinstance(answer, BaseModel) else answer
    try:
        return output.model_validate(data)
    except ValidationError as exc:
        raise MalformedOutput(
            f"scripted answer does not fit {output.__name__}: {exc.error_count()} errors"
        ) from None
