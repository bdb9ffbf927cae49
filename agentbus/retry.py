"""Retry policy: exponential backoff (through per-attempt delay queues on AMQP), then a
dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from agentbus.transport.base import QueueKind, QueueSpec

ATTEMPT_HEADER = "x-agentbus-attempt"
ERROR_CODE_HEADER = "x-agentbus-error-code"
ERROR_DETAIL_HEADER = "x-agentbus-error-detail"
ATTEMPTS_HEADER = "x-agentbus-attempts"
ORIGIN_QUEUE_HEADER = "x-agentbus-queue"
ROUTING_KEY_HEADER = "x-agentbus-routing-key"
FAILED_AT_HEADER = "x-agentbus-failed-at"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` handlings in all; the n-th retry waits `base * factor**(n-1)` seconds."""

    max_attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay <= 0 or self.factor < 1:
            raise ValueError("base_delay must be > 0 and factor >= 1")

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based)."""
        return min(self.base_delay * self.factor ** (retry - 1), self.max_delay)

    def delay_ms(self, retry: int) -> int:
        return max(1, round(self.delay(retry) * 1000))

    @property
    def retries(self) -> int:
        return self.max_attempts - 1


def retry_queue(queue: str, delay_ms: int, kind: QueueKind = "quorum") -> str:
    # Named by delay: a changed policy declares new delay queues instead of
    # clashing with the TTL of existing ones. Quorum delay queues have names of their
    # own, so that the classic ones of an older release (same name, another type) never
    # clash with them: those drain into the main queue as their messages expire.
    name = f"{queue}.retry.{delay_ms}ms"
    return f"{name}.quorum" if kind == "quorum" else name


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def partition_queue(queue: str, partition: int) -> str:
    return f"{queue}.p{partition}"


def topology(
    queue: str,
    bindings: tuple[str, ...],
    policy: RetryPolicy,
    *,
    kind: QueueKind = "quorum",
    delivery_limit: int | None = 20,
    single_active_consumer: bool = False,
    partition_group: str | None = None,
    retry_queues: bool = True,
) -> list[QueueSpec]:
    """The queues one consumer owns: its main queue, a delay queue per retry, its DLQ.
    Without `retry_queues` (a transport that retries in place) there are no delay queues.

    Each delay queue holds messages for its TTL, then dead-letters them back to the
    main queue alone (through the default exchange), so a retry never reaches
    other consumers of the same event. The main queue's delivery limit sends a
    message that keeps crashing its consumer to the DLQ. The partitions of a
    partitioned queue share the group's DLQ, and each has one active consumer.
    """
    dlq = dead_letter_queue(partition_group or queue)
    specs = [
        QueueSpec(
            name=queue,
            bindings=bindings,
            kind=kind,
            dead_letter_to=dlq,
            delivery_limit=delivery_limit if kind == "quorum" else None,
            single_active_consumer=single_active_consumer or partition_group is not None,
            partition_group=partition_group,
        )
    ]
    retries = policy.retries if retry_queues else 0
    for delay_ms in dict.fromkeys(policy.delay_ms(r) for r in range(1, retries + 1)):
        # Of the main queue's kind: on a cluster a classic queue lives on one node, and
        # while that node is down nothing can re-declare it, which stops every client
        # that lost its connection from restoring its consumers on another node.
        specs.append(
            QueueSpec(
                name=retry_queue(queue, delay_ms, kind),
                kind=kind,
                message_ttl_ms=delay_ms,
                dead_letter_to=queue,
            )
        )
    specs.append(QueueSpec(name=dlq, kind=kind))
    return specs
