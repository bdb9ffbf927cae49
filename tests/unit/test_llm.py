"""The OpenAI adapter over HTTP against a local server, and cassettes."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from agentbus.llm import (
    CassetteMiss,
    CassetteModel,
    ChatMessage,
    MalformedOutput,
    ModelRequest,
    ModelUnavailable,
    OpenAIModel,
)
from tests.support.openai_server import Behaviour, FakeOpenAI


class Answer(BaseModel):
    quantity: int
    reason: str


GOOD = {"quantity": 12, "reason": "demand over lead time"}


def request(text: str = "How many?") -> ModelRequest:
    return ModelRequest(
        messages=(ChatMessage("system", "You plan restocks."), ChatMessage("user", text)),
        output=Answer,
    )


def model(server: FakeOpenAI, **kwargs: object) -> OpenAIModel:
    client = openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key="test-key",
        timeout=kwargs.pop("timeout", 5.0),  # type: ignore[arg-type]
        max_retries=kwargs.pop("max_retries", 2),  # type: ignore[arg-type]
    )
    return OpenAIModel("gpt-test", client=client)


async def test_structured_output_is_parsed_and_usage_recorded() -> None:
    async with FakeOpenAI().then(Behaviour(content=GOOD)) as server:
        response = await model(server).complete(request())
    assert response.output == Answer(**GOOD)
    assert response.model == "gpt-test-2026-01-01"
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    [call] = server.calls
    schema = call["response_format"]
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["strict"] is True
    assert schema["json_schema"]["schema"]["additionalProperties"] is False
    assert set(schema["json_schema"]["schema"]["required"]) == {"quantity", "reason"}


async def test_malformed_answer_is_asked_again_once() -> None:
    async with FakeOpenAI().then(Behaviour(content="not json"), Behaviour(content=GOOD)) as server:
        response = await model(server).complete(request())
    assert response.output.quantity == 12  # type: ignore[attr-defined]
    assert response.attempts == 2
    assert len(server.calls) == 2


async def test_malformed_twice_raises() -> None:
    wrong = {"quantity": "many"}
    async with FakeOpenAI().then(Behaviour(content=wrong), Behaviour(content="{")) as server:
        with pytest.raises(MalformedOutput):
            await model(server).complete(request())
    assert len(server.calls) == 2


async def test_rate_limit_is_retried_after_the_server_says() -> None:
    async with FakeOpenAI().then(
        Behaviour(status=429, retry_after=0.3), Behaviour(content=GOOD)
    ) as server:
        response = await model(server).complete(request())
    assert response.output.quantity == 12  # type: ignore[attr-defined]
    assert len(server.calls) == 2
    assert server.call_times[1] - server.call_times[0] >= 0.28


async def test_server_errors_exhaust_retries_then_unavailable() -> None:
    failures = [Behaviour(status=500) for _ in range(3)]
    async with FakeOpenAI().then(*failures) as server:
        with pytest.raises(ModelUnavailable):
            await model(server, max_retries=2).complete(request())
    assert len(server.calls) == 3


async def test_a_slow_server_times_out() -> None:
    async with FakeOpenAI().then(Behaviour(content=GOOD, delay=2.0)) as server:
        with pytest.raises(ModelUnavailable, match="timed out"):
            await model(server, timeout=0.3, max_retries=0).complete(request())


async def test_cassette_records_then_replays_offline(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    first = request("Order id 3f2c9a7e-1b2c-4d5e-8f90-1234567890ab at 2026-11-24T10:00:00Z?")
    async with FakeOpenAI().then(Behaviour(content=GOOD)) as server:
        recorder = CassetteModel(path, inner=model(server), mode="record")
        recorded = await recorder.complete(first)
    replayer = CassetteModel(path, mode="replay")
    # Same situation, other ids and times: the normalized request finds the recording.
    again = request("Order id 0a1b2c3d-4e5f-4a6b-8c7d-9e8f7a6b5c4d at 2026-12-01T08:30:00Z?")
    replayed = await replayer.complete(again)
    assert replayed.output == recorded.output
    assert replayed.model == recorded.model
    with pytest.raises(CassetteMiss):
        await replayer.complete(request("Something else entirely?"))
