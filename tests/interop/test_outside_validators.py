"""The documents agentbus generates, judged by validators nobody here wrote.

- The official AsyncAPI parser (npm `@asyncapi/parser`, pinned in
  tests/support/asyncapi/package-lock.json, run with the machine's Node.js) finds no
  error and no warning in `agentbus asyncapi`'s document.
- `check-jsonschema --check-metaschema` accepts every schema `agentbus schema` writes.

Each validator is also shown a broken document, so a pass means something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from events import CATALOG
from tests.support.tools import ROOT, npm_project

PARSER = ROOT / "tests" / "support" / "asyncapi"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def agentbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def parser() -> Path:
    return npm_project(PARSER) / "validate.mjs"


def parse(parser: Path, document: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(parser), str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("amqp_url", "servers"),
    [
        (
            "amqp://reader:secret@mq.example.com:5673/shop",
            {"rabbitmq": {"host": "mq.example.com:5673", "protocol": "amqp"}},
        ),
        ("", {}),
    ],
    ids=["configured-broker", "no-broker"],
)
def test_the_asyncapi_parser_finds_no_error_and_no_warning(
    parser: Path, tmp_path: Path, amqp_url: str, servers: dict[str, Any]
) -> None:
    out = tmp_path / "asyncapi.json"
    agentbus("asyncapi", "--out", str(out), env={"AMQP_URL": amqp_url})
    result = parse(parser, out)
    assert result["parsed"]
    assert result["errors"] == []
    assert result["warnings"] == []
    assert result["channels"] == len(CATALOG)
    assert result["servers"] == servers
    document = json.loads(out.read_text())
    vhosts = {c["bindings"]["amqp"]["exchange"]["vhost"] for c in document["channels"].values()}
    assert vhosts == ({"shop"} if amqp_url else {"/"})


def test_the_asyncapi_parser_does_find_a_broken_document(parser: Path, tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    agentbus("asyncapi", "--out", str(out))
    document = json.loads(out.read_text())
    # An operation whose message is not one of its channel's.
    operation = next(iter(document["operations"].values()))
    operation["messages"] = [{"$ref": "#/components/messages/nowhere"}]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    assert parse(parser, broken)["errors"]


def check_metaschema(*files: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is in the dev group (uv sync)"
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--check-metaschema", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_check_jsonschema_accepts_every_schema_against_its_metaschema(tmp_path: Path) -> None:
    agentbus("schema", "--out", str(tmp_path))
    schemas = sorted(tmp_path.glob("*.schema.json"))
    assert len(schemas) == len(CATALOG)
    done = check_metaschema(*schemas)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.schema.json"
    schema = json.loads(schemas[0].read_text())
    schema["type"] = "no-such-type"
    broken.write_text(json.dumps(schema))
    assert check_metaschema(broken).returncode != 0
