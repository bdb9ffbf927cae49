"""Settings read from the environment, with embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentbus.errors import ConfigurationError
from agentbus.retry import RetryPolicy
from agentbus.transport.amqp_addresses import amqp_addresses
from agentbus.transport.base import EVENTS_EXCHANGE, QueueKind


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """How a service consumes. Defaults follow RabbitMQ's advice (prefetch 100 to 300)."""

    prefetch: int = 256
    concurrency: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    queue_kind: QueueKind = "quorum"
    delivery_limit: int | None = 20
    ack_linger: float = 0.002
    drain_timeout: float = 30.0
    # "wall": derived events carry the time they were made; "cause": their cause's
    # time (simulations and replays, where time follows the events).
    event_time: str = "wall"


@dataclass(frozen=True, slots=True)
class Settings:
    # One amqp:// URL, or a cluster's nodes separated by commas (transport.amqp_addresses).
    amqp_url: str | None
    database_url: str | None
    data_dir: Path
    exchange: str
    consumer: ConsumerSettings
    # Above 1: each service's queue is split into this many partitions by ordering
    # key, spread over the processes that run the service (agentbus.partitions).
    partitions: int = 1
    # SQLite's units of work and checkpoints on the event loop, not in threads: for
    # offline replays, whose files nobody else uses and where hand-offs cost most.
    sqlite_on_loop: bool = False
    # Set, it selects Kafka over AMQP_URL (the contract's Kafka binding).
    kafka_bootstrap_servers: str | None = None
    kafka_prefix: str = ""
    kafka_partitions: int = 6
    kafka_replication: int = 1
    # Rebuilding a service's state from a recording: a service then has no effect
    # outside its database (no mail sent) and makes no decisions on a timer, since its
    # state must come from the recorded events alone.
    rebuilding: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        kind = env.get("AGENTBUS_QUEUE_TYPE", "quorum")
        if kind not in ("quorum", "classic"):
            raise ConfigurationError(f"AGENTBUS_QUEUE_TYPE must be quorum or classic, not {kind!r}")
        retry = RetryPolicy(
            max_attempts=_int(env, "AGENTBUS_MAX_ATTEMPTS", 5),
            base_delay=_float(env, "AGENTBUS_RETRY_DELAY", 1.0),
            max_delay=_float(env, "AGENTBUS_RETRY_MAX_DELAY", 300.0),
        )
        event_time = env.get("AGENTBUS_EVENT_TIME", "wall")
        if event_time not in ("wall", "cause"):
            raise ConfigurationError(
                f"AGENTBUS_EVENT_TIME must be wall or cause, not {event_time!r}"
            )
        consumer = ConsumerSettings(
            event_time=event_time,
            prefetch=_int(env, "AGENTBUS_PREFETCH", 256),
            concurrency=_int(env, "AGENTBUS_CONCURRENCY", 16),
            retry=retry,
            queue_kind="quorum" if kind == "quorum" else "classic",
        )
        amqp_url = env.get("AMQP_URL") or None
        if amqp_url is not None:
            amqp_addresses(amqp_url)  # refused here, in one line, before anything connects
        return cls(
            amqp_url=amqp_url,
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env.get("AGENTBUS_DATA", ".agentbus")),
            exchange=env.get("AGENTBUS_EXCHANGE", EVENTS_EXCHANGE),
            consumer=consumer,
            partitions=_int(env, "AGENTBUS_PARTITIONS", 1),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            kafka_prefix=env.get("AGENTBUS_KAFKA_PREFIX", ""),
            kafka_partitions=_int(env, "AGENTBUS_KAFKA_PARTITIONS", 6),
            kafka_replication=_int(env, "AGENTBUS_KAFKA_REPLICATION", 1),
        )


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """How agents reach a model server and an embeddings server, read once at start.

    Chat and embeddings may be different servers (a local chat model beside a
    local embeddings model): the embeddings pair falls back to the `OPENAI_*` one.
    """

    base_url: str | None = None
    api_key: str | None = None
    model: str = "gpt-4o-mini"
    timeout: float = 30.0
    """Seconds per HTTP attempt."""
    max_retries: int = 3
    max_tokens: int = 1024
    """Sent with every call; an answer cut at the limit is a malformed answer."""
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = None
    replay_idle_wait: float = 300.0
    """How long a replay waits for the system to settle after a batch of inputs."""
    agent_run_timeout: float | None = None
    """Seconds one agent run may take, model calls included; None: the agent's own."""

    @property
    def longest_answer(self) -> float:
        """The longest one answer may take: two requests (the second after a malformed
        answer), each with its retries, each attempt up to the timeout."""
        return 2 * (self.max_retries + 1) * self.timeout

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ModelSettings:
        env = dict(os.environ if environ is None else environ)
        timeout = _float(env, "AGENTBUS_MODEL_TIMEOUT", 30.0)
        base_url = env.get("OPENAI_BASE_URL") or None
        api_key = env.get("OPENAI_API_KEY") or None
        made = cls(
            base_url=base_url,
            api_key=api_key,
            model=env.get("AGENTBUS_OPENAI_MODEL") or "gpt-4o-mini",
            timeout=timeout,
            max_tokens=_int(env, "AGENTBUS_MODEL_MAX_TOKENS", 1024),
            embeddings_base_url=env.get("AGENTBUS_EMBEDDINGS_BASE_URL") or base_url,
            embeddings_api_key=env.get("AGENTBUS_EMBEDDINGS_API_KEY") or api_key,
        )
        # Settable; by default as long as the slowest answer, and never below 300 s.
        wait = _float(env, "AGENTBUS_REPLAY_IDLE_WAIT", max(300.0, made.longest_answer))
        # A slow local model may need longer than an agent's default run allows.
        run_timeout = (
            _float(env, "AGENTBUS_AGENT_RUN_TIMEOUT", 0.0)
            if env.get("AGENTBUS_AGENT_RUN_TIMEOUT")
            else None
        )
        return replace(made, replay_idle_wait=wait, agent_run_timeout=run_timeout)


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1, not {value}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be above 0, not {value}")
    return value
