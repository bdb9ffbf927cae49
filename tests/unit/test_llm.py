"""The model port: the OpenAI adapter over HTTP (the real openai client against a
local server), cassettes, and the scripted test double. Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

import agentbus.llm
from agentbus.errors import AgentbusError, ConfigurationError
from agentbus.llm import (
    CassetteMiss,
    CassetteModel,
    ChatMessage,
    MalformedOutput,
    Model,
    ModelError,
    ModelRequest,
    ModelUnavailable,
    OpenAIModel,
    ScriptedModel,
    Usage,
    openai_model_from_env,
)
from agentbus.llm.answer_length import longest_answer
from agentbus.llm.cassette import request_key
from agentbus.llm.openai_model import DEFAULT_MAX_TOKENS, forget_fallbacks, strict_json_schema
from tests.support.openai_server import (
    Behaviour,
    FakeOpenAI,
    fail,
    malformed,
    refuse,
    reply,
    slow,
)

KEY = "sk-test-0123456789abcdefSECRET"
REPO = Path(__file__).resolve().parents[2]


class Answer(BaseModel):
    quantity: int = Field(gt=0)
    reason: str


GOOD = {"quantity": 12, "reason": "demand over lead time"}


def request(
    text: str = "How many?", output: type[BaseModel] = Answer, **kwargs: Any
) -> ModelRequest:
    return ModelRequest(
        messages=(ChatMessage("system", "You plan restocks."), ChatMessage("user", text)),
        output=output,
        **kwargs,
    )


ModelAt = Callable[..., OpenAIModel]


@pytest.fixture
async def model_at() -> AsyncIterator[ModelAt]:
    """`model_at(server, timeout=..., max_retries=...)`: an OpenAIModel at the fake server."""
    made: list[OpenAIModel] = []

    def make(server: FakeOpenAI, *, timeout: float = 5.0, max_retries: int = 2) -> OpenAIModel:
        model = OpenAIModel(
            "gpt-test",
            base_url=server.base_url,
            api_key=KEY,
            timeout=timeout,
            max_retries=max_retries,
        )
        made.append(model)
        return model

    yield make
    for model in made:
        await model.aclose()


@pytest.fixture(autouse=True)
def no_real_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the environment holds, nothing here can reach a real endpoint."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTBUS_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def json_schema_first() -> Iterator[None]:
    """A fake server's port may come again in a later test: start each one afresh."""
    forget_fallbacks()
    yield
    forget_fallbacks()


# The OpenAI adapter


async def test_structured_output_is_parsed_and_usage_recorded(model_at: ModelAt) -> None:
    async with FakeOpenAI([reply(GOOD)]) as server:
        response = await model_at(server).complete(request())
    assert response.output == Answer(**GOOD)
    assert response.model == "gpt-test-2024-07-18"
    assert response.provider == "openai"
    assert response.finish_reason == "stop"
    assert response.attempts == 1
    [answer] = server.responses
    assert response.usage == Usage(
        answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]
    )
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0


async def test_the_request_asks_for_strict_json_schema_output(model_at: ModelAt) -> None:
    async with FakeOpenAI([reply(GOOD)]) as server:
        await model_at(server).complete(request(temperature=0.3, max_output_tokens=200))
    [call] = server.calls
    assert call["model"] == "gpt-test"
    assert call["messages"] == [
        {"role": "system", "content": "You plan restocks."},
        {"role": "user", "content": "How many?"},
    ]
    assert call["temperature"] == 0.3
    assert call["max_completion_tokens"] == 200
    assert call["max_tokens"] == 200  # not OpenAI's own API: the older name too
    fmt = call["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["quantity", "reason"]
    assert schema["properties"]["quantity"]["exclusiveMinimum"] == 0


class Line(BaseModel):
    """A line of a plan."""

    sku: str
    title: str = Field(description="shown to reviewers")
    note: str | None = None


class Category(BaseModel):
    name: str
    children: list[Category] = []


class Plan(BaseModel):
    lines: list[Line]
    main: Line = Field(description="the most urgent line")
    kind: Literal["restock", "substitute"]
    default: int = 3
    tree: Category | None = None


def objects(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    found.extend(objects(sub))
            else:
                found.extend(objects(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(objects(item))
    return found


async def test_nested_optional_and_recursive_models_get_a_strict_schema(model_at: ModelAt) -> None:
    async with FakeOpenAI() as server:  # the default responder answers from the schema
        response = await model_at(server).complete(
            ModelRequest((ChatMessage("user", "Plan."),), output=Plan)
        )
    assert isinstance(response.output, Plan)
    schema = server.calls[0]["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"lines", "main", "kind", "default", "tree"}
    for node in objects(schema):
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
    main = schema["properties"]["main"]
    assert main["description"] == "the most urgent line"  # a $ref with siblings is inlined
    assert set(main["properties"]) == {"sku", "title", "note"}  # a property named "title"
    assert "default" not in schema["properties"]["default"]
    # Only the recursive model keeps a definition to refer to.
    assert set(schema["$defs"]) == {"Category"}
    assert "$ref" not in json.dumps(schema["properties"]["lines"])


async def test_dict_fields_are_refused_before_any_request(model_at: ModelAt) -> None:
    class Loose(BaseModel):
        counts: dict[str, int]

    async with FakeOpenAI() as server:
        with pytest.raises(ConfigurationError, match="free-form object"):
            await model_at(server).complete(ModelRequest((ChatMessage("user", "x"),), Loose))
    assert server.calls == []


async def test_a_malformed_answer_is_asked_again_once_with_the_reason(model_at: ModelAt) -> None:
    wrong = {"quantity": 0, "reason": "none needed"}  # the schema's shape, a value it forbids
    async with FakeOpenAI([reply(wrong), reply(GOOD)]) as server:
        model = model_at(server)
        response = await model.complete(request())
    assert response.output == Answer(**GOOD)
    assert response.attempts == 2
    assert len(server.calls) == 2
    first, second = (call["messages"] for call in server.calls)
    assert second[:2] == first
    assert second[2] == {"role": "assistant", "content": json.dumps(wrong)}
    assert "quantity" in second[3]["content"]
    # A wrong value says nothing about the server: it is still asked for json_schema.
    assert [c["response_format"]["type"] for c in server.calls] == ["json_schema"] * 2
    assert model.structured == "json_schema"
    # Tokens of both requests are counted: both were paid for.
    assert response.usage.input_tokens == sum(r["usage"]["prompt_tokens"] for r in server.responses)


async def test_a_server_that_ignores_the_schema_gets_it_in_the_prompt_from_then_on(
    model_at: ModelAt, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake: no real server here ignores `response_format` (llama.cpp enforces it)."""
    prose = "twelve, I think"
    async with FakeOpenAI([malformed(prose), reply(GOOD), reply(GOOD)]) as server:
        model = model_at(server)
        response = await model.complete(request())
        again = await model_at(server).complete(request("And now?"))
    assert response.output == again.output == Answer(**GOOD)
    assert response.attempts == 2
    assert again.attempts == 1
    modes = [call["response_format"]["type"] for call in server.calls]
    assert modes == ["json_schema", "json_object", "json_object"]
    first, second, third = (call["messages"] for call in server.calls)
    assert second[0]["role"] == third[0]["role"] == "system"
    assert '"quantity"' in second[0]["content"]
    assert "JSON schema" in second[0]["content"]
    assert second[1:3] == first
    assert second[3] == {"role": "assistant", "content": prose}
    assert "not valid JSON" in second[4]["content"]
    assert third[1:] == [
        {"role": m.role, "content": m.content} for m in request("And now?").messages
    ]
    assert sum("ignored the json_schema" in r.getMessage() for r in caplog.records) == 1


LLAMA_CPP_PYTHON_REFUSAL = (
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]"
)


@pytest.mark.parametrize("status", [400, 422, 500])
async def test_a_server_that_refuses_json_schema_gets_json_object_once_per_process(
    model_at: ModelAt, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """A fake: the server that refuses (llama-cpp-python's) takes minutes to compile here."""
    refusals = [fail(status, message=LLAMA_CPP_PYTHON_REFUSAL)] * (2 if status >= 500 else 1)
    async with FakeOpenAI([*refusals, reply(GOOD), reply(GOOD), reply(GOOD)]) as server:
        first = await model_at(server, max_retries=1).complete(request())
        second = await model_at(server, max_retries=1).complete(request("again"))
        third = await model_at(server, max_retries=1).complete(request("and again"))
    assert first.output == second.output == third.output == Answer(**GOOD)
    assert first.attempts == 1  # a refused format is not a malformed answer
    modes = [call["response_format"]["type"] for call in server.calls]
    assert modes == ["json_schema"] * len(refusals) + ["json_object"] * 3
    assert all('"reason"' in call["messages"][0]["content"] for call in server.calls[-3:])
    assert sum("refused json_schema" in r.getMessage() for r in caplog.records) == 1


async def test_a_refusal_that_does_not_name_the_format_is_an_error(model_at: ModelAt) -> None:
    async with FakeOpenAI([fail(400, message="messages: too long"), reply(GOOD)]) as server:
        model = model_at(server)
        with pytest.raises(ModelError, match="HTTP 400"):
            await model.complete(request())
    assert len(server.calls) == 1
    assert model.structured == "json_schema"


async def test_every_call_carries_a_token_limit_and_a_cut_answer_is_malformed(
    model_at: ModelAt,
) -> None:
    cut = Behaviour(content='{"quantity": 12, "reason": "demand over', finish_reason="length")
    async with FakeOpenAI([cut, cut]) as server:
        with pytest.raises(MalformedOutput, match="cut off at the token limit"):
            await model_at(server).complete(request())
    assert len(server.calls) == 2
    for call in server.calls:
        assert call["max_completion_tokens"] == call["max_tokens"] == DEFAULT_MAX_TOKENS
        assert call["response_format"]["type"] == "json_schema"  # cut short, not ignored


class Bounded(BaseModel):
    quantity: int = Field(ge=1, le=1000)
    reason: str = Field(max_length=3000)


async def test_the_limit_rises_to_the_longest_answer_a_bounded_schema_allows(
    model_at: ModelAt,
) -> None:
    """A model that fills the 3,000-character reason gives a valid answer: a limit of
    1,024 would cut it. A limit the request sets itself is kept as it is."""
    answer = {"quantity": 3, "reason": "r"}
    async with FakeOpenAI([reply(answer), reply(answer), reply(GOOD)]) as server:
        model = model_at(server)
        await model.complete(request(output=Bounded))
        await model.complete(request(output=Bounded, max_output_tokens=100))
        await model.complete(request())  # unbounded: the configured limit
    raised, kept, unbounded = server.calls
    longest = longest_answer(strict_json_schema(Bounded))
    assert longest is not None
    assert longest > 3000 > DEFAULT_MAX_TOKENS
    assert raised["max_completion_tokens"] == raised["max_tokens"] == longest
    assert kept["max_completion_tokens"] == 100
    assert unbounded["max_completion_tokens"] == DEFAULT_MAX_TOKENS


async def test_malformed_twice_raises_after_exactly_two_requests(model_at: ModelAt) -> None:
    wrong = {"quantity": 0, "reason": "none needed"}  # valid JSON, fails validation (gt=0)
    async with FakeOpenAI([reply(wrong), malformed("{")]) as server:
        with pytest.raises(MalformedOutput, match="2 requests") as caught:
            await model_at(server).complete(request())
    assert len(server.calls) == 2
    assert "quantity" in server.calls[1]["messages"][3]["content"]
    assert isinstance(caught.value, ModelError)


async def test_a_refusal_counts_as_malformed(model_at: ModelAt) -> None:
    async with FakeOpenAI([refuse(), reply(GOOD)]) as server:
        response = await model_at(server).complete(request())
    assert response.attempts == 2
    assert server.calls[0]["messages"] == server.calls[1]["messages"]
    async with FakeOpenAI([refuse(), refuse()]) as server:
        with pytest.raises(MalformedOutput, match="refused"):
            await model_at(server).complete(request())


async def test_rate_limit_is_retried_by_the_client_after_retry_after(model_at: ModelAt) -> None:
    async with FakeOpenAI([fail(429, retry_after=0.2), reply(GOOD)]) as server:
        response = await model_at(server).complete(request())
    assert response.output == Answer(**GOOD)
    assert response.attempts == 1  # transport retries are the client's, not answers
    assert len(server.calls) == 2
    assert server.call_times[1] - server.call_times[0] >= 0.2


async def test_server_errors_back_off_exponentially_then_unavailable(model_at: ModelAt) -> None:
    async with FakeOpenAI([fail(500)] * 3) as server:
        with pytest.raises(ModelUnavailable, match="HTTP 500 after retries"):
            await model_at(server, max_retries=2).complete(request())
    assert len(server.calls) == 3  # max_retries + 1
    t = server.call_times
    first, second = t[1] - t[0], t[2] - t[1]
    assert first >= 0.5 * 0.75  # the client's initial delay, less at most 25 % jitter
    assert second > first  # doubled


async def test_a_slow_server_times_out(model_at: ModelAt) -> None:
    async with FakeOpenAI([slow(2.0), slow(2.0)]) as server:
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match="timed out"):
            await model_at(server, timeout=0.2, max_retries=1).complete(request())
        elapsed = time.monotonic() - started
    assert len(server.calls) == 2  # a timeout is retried by the client too
    assert server.completed == 0
    assert elapsed < 1.9


async def test_an_unreachable_server_is_unavailable(model_at: ModelAt) -> None:
    server = FakeOpenAI()
    async with server:
        pass  # its port is closed now
    with pytest.raises(ModelUnavailable, match="connection failed"):
        await model_at(server, max_retries=0).complete(request())


async def test_a_refused_request_is_not_retried_and_errors_never_show_the_key(
    model_at: ModelAt,
) -> None:
    message = f"Incorrect API key provided: {KEY}. Bearer {KEY}"
    async with FakeOpenAI([fail(401, message=message)]) as server:
        with pytest.raises(ModelError, match="HTTP 401") as caught:
            await model_at(server).complete(request())
    assert len(server.calls) == 1
    assert not isinstance(caught.value, ModelUnavailable)
    text = "".join(traceback.format_exception(caught.value))
    assert KEY not in text
    assert "SECRET" not in text


async def test_openai_model_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        openai_model_from_env()
    async with FakeOpenAI([reply(GOOD)]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # a local server needs no key
        monkeypatch.setenv("AGENTBUS_OPENAI_MODEL", "gpt-env")
        model = openai_model_from_env()
        response = await model.complete(request())
        await model.aclose()
    assert model.name == "gpt-env"
    assert server.calls[0]["model"] == "gpt-env"
    assert response.model == "gpt-env-2024-07-18"
    monkeypatch.delenv("AGENTBUS_OPENAI_MODEL")
    default = openai_model_from_env()
    assert default.name == "gpt-4o-mini"
    await default.aclose()


async def test_a_given_client_is_used_as_configured() -> None:
    async with FakeOpenAI([fail(500), reply(GOOD)]) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(ModelUnavailable):
            await OpenAIModel("gpt-test", client=client).complete(request())
        assert len(server.calls) == 1
        with pytest.raises(ConfigurationError):
            OpenAIModel("gpt-test", client=client, base_url=server.base_url)
        await client.close()


# Cassettes


async def test_a_cassette_records_then_replays_with_the_server_stopped(
    model_at: ModelAt, tmp_path: Path
) -> None:
    path = tmp_path / "cassettes" / "answers.jsonl"
    requests = [request("How many knives?"), request("How many forks?")]
    async with FakeOpenAI([reply(GOOD), reply({"quantity": 4, "reason": "forks"})]) as server:
        recorder = CassetteModel(path, inner=model_at(server), mode="record")
        recorded = [await recorder.complete(r) for r in requests]
    assert len(server.calls) == 2
    line = json.loads(path.read_text().splitlines()[0])
    assert {"key", "request", "output", "model", "provider", "usage", "finish_reason"} <= set(line)
    assert line["request"]["output"] == "Answer"

    replayer = CassetteModel(path, mode="replay")
    replayed = [await replayer.complete(r) for r in requests]
    assert replayed == recorded  # outputs, recorded model name, usage, finish reason, time
    assert all(r.seconds is not None and r.seconds > 0 for r in replayed)
    assert replayer.name == "gpt-test"
    assert len(server.calls) == 2


async def test_replay_misses_raise_and_never_call_the_inner_model(
    model_at: ModelAt, tmp_path: Path
) -> None:
    path = tmp_path / "answers.jsonl"
    async with FakeOpenAI([reply(GOOD)]) as server:
        await CassetteModel(path, inner=model_at(server), mode="record").complete(request())
        replayer = CassetteModel(path, inner=model_at(server), mode="replay")
        with pytest.raises(CassetteMiss):
            await replayer.complete(request("How many, roughly?"))
        with pytest.raises(CassetteMiss):
            await replayer.complete(request(temperature=0.7))
    assert len(server.calls) == 1
    with pytest.raises(ConfigurationError):
        CassetteModel(tmp_path / "missing.jsonl", mode="replay")


async def test_an_answer_malformed_twice_is_recorded_and_replayed_as_malformed(
    model_at: ModelAt, tmp_path: Path
) -> None:
    path = tmp_path / "answers.jsonl"
    async with FakeOpenAI([malformed("{"), malformed("[")]) as server:
        recorder = CassetteModel(path, inner=model_at(server), mode="record")
        with pytest.raises(MalformedOutput):
            await recorder.complete(request())
        with pytest.raises(MalformedOutput):
            await recorder.complete(request())  # recorded: not asked again
    assert len(server.calls) == 2  # the one request and its retry
    [line] = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["error"] == "MalformedOutput"
    assert "output" not in line
    replayer = CassetteModel(path, mode="replay")
    with pytest.raises(MalformedOutput) as caught:
        await replayer.complete(request())
    assert not isinstance(caught.value, CassetteMiss)


async def test_an_outage_is_not_recorded(model_at: ModelAt, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    async with FakeOpenAI([fail(500)] * 2) as server:
        recorder = CassetteModel(path, inner=model_at(server, max_retries=1), mode="record")
        with pytest.raises(ModelUnavailable):
            await recorder.complete(request())
    assert not path.exists() or path.read_text() == ""


def test_volatile_ids_and_times_do_not_change_the_key() -> None:
    def prompt(order: str, other: str, at: str, day: str, trace: str) -> ModelRequest:
        return request(f"Order {order} (like {other}) at {at}, due {day}, trace {trace}.")

    a = prompt(
        "3f2c9a7e-1b2c-4d5e-8f90-1234567890ab",
        "0a1b2c3d-4e5f-4a6b-8c7d-9e8f7a6b5c4d",
        "2026-11-24T10:00:00Z",
        "2026-11-30",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    b = prompt(
        "9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b",
        "11111111-2222-4333-8444-555555555555",
        "2027-01-02T08:30:15.123+01:00",
        "2027-01-09",
        "00f067aa0ba902b700f067aa0ba902b7",
    )
    assert request_key(a) == request_key(b)
    # Which ids are the same one is part of the situation.
    same = prompt(
        "3f2c9a7e-1b2c-4d5e-8f90-1234567890ab",
        "3f2c9a7e-1b2c-4d5e-8f90-1234567890ab",
        "2026-11-24T10:00:00Z",
        "2026-11-30",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    assert request_key(same) != request_key(a)
    assert request_key(request("How many?")) != request_key(request("How many now?"))
    assert request_key(request()) != request_key(request(temperature=0.5))
    other_schema = ModelRequest(request().messages, output=Line)
    assert request_key(other_schema) != request_key(request())


async def test_a_replayed_answer_cites_the_ids_of_the_current_request(
    model_at: ModelAt, tmp_path: Path
) -> None:
    path = tmp_path / "answers.jsonl"
    old, new = "3f2c9a7e-1b2c-4d5e-8f90-1234567890ab", "9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b"
    async with FakeOpenAI([reply({"quantity": 3, "reason": f"order {old} shows demand"})]) as s:
        recorder = CassetteModel(path, inner=model_at(s), mode="record")
        await recorder.complete(request(f"Order {old} came in."))
    replayed = await CassetteModel(path, mode="replay").complete(request(f"Order {new} came in."))
    assert replayed.output == Answer(quantity=3, reason=f"order {new} shows demand")


async def test_recording_reuses_what_was_recorded_before(model_at: ModelAt, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    async with FakeOpenAI([reply(GOOD), reply(GOOD)]) as server:
        first = await CassetteModel(path, inner=model_at(server), mode="record").complete(request())
        again = CassetteModel(path, inner=model_at(server), mode="record")
        second = await again.complete(request())
    assert second == first
    assert len(server.calls) == 1
    assert len(path.read_text().splitlines()) == 1


async def test_concurrent_recording_appends_whole_lines(model_at: ModelAt, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    n = 12
    async with FakeOpenAI() as server:
        recorder = CassetteModel(path, inner=model_at(server), mode="record")
        await asyncio.gather(*(recorder.complete(request(f"Question {i}?")) for i in range(n)))
    scripted = ScriptedModel([GOOD] * n)
    threaded = CassetteModel(path, inner=scripted, mode="record")

    def record_in_a_thread(i: int) -> None:
        asyncio.run(threaded.complete(request(f"Threaded question {i}?")))

    await asyncio.gather(*(asyncio.to_thread(record_in_a_thread, i) for i in range(n)))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 * n
    assert len({json.loads(line)["key"] for line in lines}) == 2 * n
    assert len(CassetteModel(path, mode="replay")) == 2 * n


# The scripted model


async def test_scripted_model_answers_in_order_and_records_requests() -> None:
    model = ScriptedModel(
        [
            Answer(**GOOD),
            {"quantity": 2, "reason": "a dict"},
            lambda r: Answer(quantity=len(r.messages), reason="computed"),
            ModelUnavailable("down"),
            MalformedOutput,
            {"quantity": -1, "reason": "out of bounds"},
        ],
        name="gpt-scripted",
    )
    first = await model.complete(request())
    assert first.output == Answer(**GOOD)
    assert first.model == "gpt-scripted"
    assert first.usage == Usage(100, 20)
    assert (await model.complete(request())).output == Answer(quantity=2, reason="a dict")
    assert (await model.complete(request())).output == Answer(quantity=2, reason="computed")
    with pytest.raises(ModelUnavailable, match="down"):
        await model.complete(request())
    with pytest.raises(MalformedOutput):
        await model.complete(request())
    with pytest.raises(MalformedOutput):
        await model.complete(request())
    with pytest.raises(ModelError, match="script exhausted"):
        await model.complete(request("One more?"))
    assert len(model.requests) == 7
    assert model.requests[-1].messages[-1].content == "One more?"


# The public surface


async def test_the_public_surface_is_pinned() -> None:
    assert set(agentbus.llm.__all__) == {
        "CassetteMiss",
        "CassetteModel",
        "ChatMessage",
        "MalformedOutput",
        "Model",
        "ModelError",
        "ModelRequest",
        "ModelResponse",
        "ModelUnavailable",
        "OpenAIModel",
        "ScriptedModel",
        "Usage",
        "openai_model_from_env",
    }
    assert issubclass(ModelError, AgentbusError)
    for error in (MalformedOutput, ModelUnavailable, CassetteMiss):
        assert issubclass(error, ModelError)
    models = [
        OpenAIModel("gpt-test", base_url="http://127.0.0.1:9/v1"),
        ScriptedModel([]),
        CassetteModel(Path("unused.jsonl"), inner=ScriptedModel([]), mode="record"),
    ]
    for model in models:
        assert isinstance(model, Model)
    await models[0].aclose()  # type: ignore[attr-defined]


# The fake server itself


async def test_embeddings_are_deterministic_unit_vectors() -> None:
    async with FakeOpenAI() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY)
        floats = await client.embeddings.create(
            model="embed-test", input=["low stock", "garden hose"], encoding_format="float"
        )
        packed = await client.embeddings.create(model="embed-test", input="low stock")
        sized = await client.embeddings.create(model="embed-test", input="x", dimensions=32)
        await client.close()
    a, b = (item.embedding for item in floats.data)
    assert len(a) == 8
    assert a != b
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-9)
    assert packed.data[0].embedding == pytest.approx(a, rel=1e-6)  # base64 float32 by default
    assert len(sized.data[0].embedding) == 32
    assert server.stats() == {"calls": 0, "completed": 0, "embeddings": 3}


async def test_the_server_runs_as_its_own_process() -> None:
    async with FakeOpenAI() as probe:
        port = probe.port  # a port that was free a moment ago
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.openai_server",
        "--port",
        str(port),
        "--responder",
        "tests.support.openai_server:schema_responder",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        assert line.decode().strip() == "ready"
        model = OpenAIModel("gpt-test", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        response = await model.complete(request())
        await model.aclose()
        assert response.output == Answer(quantity=1, reason="example")  # fits the schema
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"http://127.0.0.1:{port}/stats")).json()
        assert stats == {"calls": 1, "completed": 1, "embeddings": 0}
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0
