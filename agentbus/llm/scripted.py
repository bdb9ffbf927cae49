"""A model that answers from a script, for tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from agentbus.llm.base import ModelError, ModelRequest, ModelResponse, Usage

Answer = BaseModel | dict[str, Any] | BaseException | Callable[[ModelRequest], BaseModel]


class ScriptedModel:
    provider = "scripted"

    def __init__(
        self, answers: Iterable[Answer], *, name: str = "scripted", usage: Usage | None = None
    ) -> None:
        self.name = name
        self.answers: deque[Answer] = deque(answers)
        self.requests: list[ModelRequest] = []
        self.usage = usage or Usage(100, 20)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if not self.answers:
            raise ModelError("script exhausted")
        answer = self.answers.popleft()
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, BaseModel):
            output = answer
        elif isinstance(answer, dict):
            output = request.output.model_validate(answer)
        else:
            output = answer(request)
        return ModelResponse(output, self.name, self.provider, self.usage, "stop")
