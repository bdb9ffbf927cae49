"""The settings a process runs with, made from the variables (agentbus.environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentbus.environment import Environment, load_environment
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
    # Both URLs may hold credentials: kept out of the repr.
    amqp_url: str | None = field(repr=False)
    database_url: str | None = field(repr=False)
    data_dir: Path
    exchange: str
    consumer: ConsumerSettings
    # Above 1: each service's queue is split into this many partitions by ordering
    # key, spread over the processes that run the service (agentbus.partitions).
    partitions: int = 1
    # SQLite's units of work and checkpoints on the event loop, not in threads: for
    # offline replays, whose files nobody else uses and where hand-offs cost most.
    stores_on_loop: bool = False
    # SQLite files the run throws away at its end (an offline replay's, in a folder of
    # its own): written without waiting for the disk. Measured on a replay of steady:
    # 1.35 s -> 1.18 s, the WAL's writes no longer synced at its checkpoints.
    sqlite_scratch: bool = False
    # Set, it selects Kafka over AMQP_URL (the contract's Kafka binding).
    kafka_bootstrap_servers: str | None = None
    kafka_prefix: str = ""
    kafka_partitions: int = 6
    kafka_replication: int = 1
    kafka_session_timeout_ms: int = 10_000
    # Rebuilding a service's state from a recording: a service then has no effect
    # outside its database (no mail sent) and makes no decisions on a timer, since its
    # state must come from the recorded events alone.
    rebuilding: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """From the process's environment and `.env`, or from `environ` alone."""
        return cls.of(load_environment(environ))

    @classmethod
    def of(cls, env: Environment) -> Settings:
        retry = RetryPolicy(
            max_attempts=env.max_attempts,
            base_delay=env.retry_delay,
            max_delay=env.retry_max_delay,
        )
        consumer = ConsumerSettings(
            event_time=env.event_time,
            prefetch=env.prefetch,
            concurrency=env.concurrency,
            retry=retry,
            queue_kind=env.queue_type,
        )
        amqp_url = env.secret("amqp_url")
        if amqp_url is not None:
            amqp_addresses(amqp_url)  # refused here, in one line, before anything connects
        return cls(
            amqp_url=amqp_url,
            database_url=env.secret("database_url"),
            data_dir=env.data_dir,
            exchange=env.exchange or EVENTS_EXCHANGE,
            consumer=consumer,
            partitions=env.partitions,
            kafka_bootstrap_servers=env.kafka_bootstrap_servers,
            kafka_prefix=env.kafka_prefix,
            kafka_partitions=env.kafka_partitions,
            kafka_replication=env.kafka_replication,
            kafka_session_timeout_ms=env.kafka_session_timeout_ms,
        )


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """How agents reach a model server and an embeddings server, read once at start.

    Chat and embeddings may be different servers (a local chat model beside a
    local embeddings model): the embeddings pair falls back to the `OPENAI_*` one.
    """

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str = "gpt-4o-mini"
    timeout: float = 30.0
    """Seconds per HTTP attempt."""
    max_retries: int = 3
    max_tokens: int = 1024
    """Sent with every call; an answer cut at the limit is a malformed answer."""
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = field(default=None, repr=False)
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """From the process's environment and `.env`, or from `environ` alone."""
        return cls.of(load_environment(environ))

    @classmethod
    def of(cls, env: Environment) -> ModelSettings:
        api_key = env.secret("openai_api_key")
        made = cls(
            base_url=env.openai_base_url,
            api_key=api_key,
            model=env.openai_model,
            timeout=env.model_timeout,
            max_tokens=env.model_max_tokens,
            embeddings_base_url=env.embeddings_base_url or env.openai_base_url,
            embeddings_api_key=env.secret("embeddings_api_key") or api_key,
            agent_run_timeout=env.agent_run_timeout,
        )
        # Settable; by default as long as the slowest answer, and never below 300 s.
        wait = env.replay_idle_wait or max(300.0, made.longest_answer)
        return replace(made, replay_idle_wait=wait)
