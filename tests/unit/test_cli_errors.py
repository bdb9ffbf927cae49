"""Bad arguments, a missing broker or a bad file: one line on stderr, a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentbus.envelope import EventCodec
from tests.contract.catalog import CATALOG, sample

UNREACHABLE = "amqp://guest:secret-password@127.0.0.1:1/"


def agentbus(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
    environ["AGENTBUS_APP"] = "tests.contract.app:app"
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(EventCodec(CATALOG).encode(sample("order.created", "k", 1)) + b"\n")
    return path


def test_publish_without_a_broker_setting(recording: Path) -> None:
    assert_one_line_error(agentbus("publish", str(recording)), "AMQP_URL")


def test_publish_to_an_unreachable_broker_hides_the_password(recording: Path) -> None:
    result = agentbus("publish", str(recording), AMQP_URL=UNREACHABLE)
    assert_one_line_error(result, "cannot connect")
    assert "secret-password" not in result.stderr


def test_publish_a_missing_file() -> None:
    assert_one_line_error(
        agentbus("publish", "/no/such/file.jsonl", AMQP_URL=UNREACHABLE), "/no/such"
    )


def test_publish_a_file_with_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n")
    assert_one_line_error(
        agentbus("publish", str(path), AMQP_URL=UNREACHABLE), "bad.jsonl:1", "malformed_json"
    )


def test_run_an_unknown_service() -> None:
    assert_one_line_error(agentbus("run", "nosuch", AMQP_URL=UNREACHABLE), "nosuch", "echo")


def test_run_against_an_unreachable_broker() -> None:
    assert_one_line_error(agentbus("run", "echo", AMQP_URL=UNREACHABLE), "cannot connect")


def test_a_bad_setting() -> None:
    assert_one_line_error(agentbus("dlq", "list", AGENTBUS_PREFETCH="lots"), "AGENTBUS_PREFETCH")


def test_a_bad_broker_url() -> None:
    assert_one_line_error(agentbus("dlq", "list", AMQP_URL="http://x"), "amqp://")


def test_record_to_an_unwritable_place() -> None:
    result = agentbus("record", "--out", "/no/such/dir/out.jsonl", AMQP_URL=UNREACHABLE)
    assert_one_line_error(result, "/no/such/dir")


def test_unknown_option_is_a_usage_error() -> None:
    result = agentbus("publish", "--bogus")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    result = agentbus(
        "state",
        "inventory",
        AGENTBUS_APP="consumers.app:app",
        AGENTBUS_DATA=str(tmp_path),
        DATABASE_URL="postgresql://shop:db-secret-password@127.0.0.1:1/shop",
    )
    assert_one_line_error(result, "OperationalError")
    assert "db-secret-password" not in result.stderr + result.stdout
