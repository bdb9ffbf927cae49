"""Every variable in one typed object: the README's table is made from it, secrets never
print, a `.env` file is read, a bad value is one line naming the variable, and nothing
outside the settings modules reads the process environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agentbus.environment import load_environment, settings_table, with_table
from agentbus.errors import ConfigurationError
from agentbus.settings import ModelSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "AMQP_URL": "amqp://shop:hunter2-amqp@rabbit:5672/",
    "DATABASE_URL": "postgresql://shop:hunter2-pg@db/shop",
    "OPENAI_API_KEY": "sk-hunter2-openai",
    "AGENTBUS_EMBEDDINGS_API_KEY": "hunter2-embeddings",
    "QDRANT_API_KEY": "hunter2-qdrant",
    "AGENTBUS_API_TOKENS": "hunter2-api",
    "REVIEW_SECRET": "hunter2-cookies",
    "REVIEW_TOKEN": "hunter2-review",
    "REVIEW_WEBHOOK_SECRET": "hunter2-webhook",
    "SMTP_URL": "smtp://mail:hunter2-smtp@mail:587",
}


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert with_table(readme) == readme, (
        "the README's settings table is stale: uv run python -m agentbus.environment README.md"
    )
    table = settings_table()
    for name in ("AMQP_URL", "AGENTBUS_MODEL_TIMEOUT", "REVIEW_USERS", "PAYMENT_LIMIT"):
        assert f"| `{name}` |" in table


def test_secrets_never_print() -> None:
    environment = load_environment(SECRETS)
    shown = " ".join(
        [
            repr(environment),
            str(environment),
            repr(Settings.of(environment)),
            repr(ModelSettings.of(environment)),
        ]
    )
    assert "hunter2" not in shown, shown
    # and they are there for the code that uses them
    assert environment.secret("openai_api_key") == "sk-hunter2-openai"
    assert Settings.of(environment).database_url == SECRETS["DATABASE_URL"]
    assert ModelSettings.of(environment).embeddings_api_key == "hunter2-embeddings"


def test_a_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("AGENTBUS_PREFETCH=7\nAGENTBUS_CONCURRENCY=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTBUS_PREFETCH", raising=False)
    monkeypatch.setenv("AGENTBUS_CONCURRENCY", "5")
    consumer = Settings.from_env().consumer
    assert (consumer.prefetch, consumer.concurrency) == (7, 5)


def test_the_process_environment_is_read_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTBUS_PREFETCH", "11")
    first = load_environment()
    assert load_environment() is first  # the same object: not parsed again
    monkeypatch.setenv("AGENTBUS_PREFETCH", "12")
    changed = load_environment()
    assert changed is not first
    assert changed.prefetch == 12
    (tmp_path / ".env").write_text("AGENTBUS_CONCURRENCY=4\n")
    from_file = load_environment()
    assert from_file is not changed
    assert from_file.concurrency == 4
    # A variable the platform does not declare changes nothing it reads.
    monkeypatch.setenv("SOMETHING_ELSE_ENTIRELY", "x")
    assert load_environment() is from_file


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTBUS_PREFETCH", "many"),
        ("AGENTBUS_QUEUE_TYPE", "lazy"),
        ("PAYMENT_LIMIT", "-1"),
        ("AGENTBUS_SHIPPING_DELAY_S", "a week"),
        ("REVIEW_PORT", "70000"),
        ("QDRANT_SHARDS", "0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_environment({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: "), message
    assert "\n" not in message, message


def test_an_empty_value_counts_as_unset() -> None:
    assert load_environment({"AGENTBUS_PREFETCH": ""}).prefetch == 256


def _reads_the_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ("environ", "getenv") for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_and_the_entry_points_read_the_environment() -> None:
    # The settings modules read it (through pydantic-settings); a script that starts a
    # model server and hands its address to the code it runs is an entry point.
    allowed = {
        "agentbus/environment.py",
        "agentbus/settings.py",
        "evals/record_cassettes.py",
    }
    found = []
    for package in ("agentbus", "agents", "consumers", "tools", "evals", "events"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name in allowed:
                continue
            for line in _reads_the_environment(ast.parse(path.read_text())):
                found.append(f"{name}:{line}")
    assert found == [], found
