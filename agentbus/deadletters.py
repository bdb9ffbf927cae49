"""Inspecting and redriving dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from agentbus.envelope import AMQP_HEADER_PREFIX, name_of
from agentbus.retry import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_CODE_HEADER,
    ERROR_DETAIL_HEADER,
    FAILED_AT_HEADER,
    ORIGIN_QUEUE_HEADER,
    dead_letter_queue,
)
from agentbus.transport.base import Delivery, Message, Transport


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str
    event_id: str | None
    type: str | None
    error_code: str
    detail: str
    attempts: int
    failed_at: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe_dead_letter(
    queue: str, message: Message, *, header_prefix: str = AMQP_HEADER_PREFIX
) -> DeadLetter:
    """A dead letter named by its event: the `id` and `type` in its body (structured
    mode), else in its CloudEvents headers (binary mode), and only then the message's
    properties, which a publisher's client may have made up."""
    headers = message.headers
    code = headers.get(ERROR_CODE_HEADER)
    if not isinstance(code, str):
        # Dead-lettered by the broker itself (the delivery limit of a quorum queue).
        reason = headers.get("x-first-death-reason")
        code = str(reason) if reason else "unknown"
    attempts = headers.get(ATTEMPTS_HEADER)
    if not isinstance(attempts, int):
        count = headers.get("x-delivery-count")
        attempts = count + 1 if isinstance(count, int) else 0
    detail = headers.get(ERROR_DETAIL_HEADER)
    failed_at = headers.get(FAILED_AT_HEADER)
    event_id, event_type = name_of(
        message.body,
        content_type=message.content_type,
        headers=headers,
        header_prefix=header_prefix,
    )
    return DeadLetter(
        queue=str(headers.get(ORIGIN_QUEUE_HEADER) or queue),
        event_id=event_id or message.message_id,
        type=event_type or message.type,
        error_code=code,
        detail=detail if isinstance(detail, str) else "",
        attempts=attempts,
        failed_at=failed_at if isinstance(failed_at, str) else None,
    )


async def list_dead_letters(transport: Transport, queues: Sequence[str]) -> list[DeadLetter]:
    """Every dead letter of the queues, left in place."""
    found: list[DeadLetter] = []
    for queue in queues:
        taken: list[Delivery] = []
        try:
            prefix = transport.broker_info.header_prefix
            while (delivery := await transport.get(dead_letter_queue(queue))) is not None:
                taken.append(delivery)
                found.append(describe_dead_letter(queue, delivery.message, header_prefix=prefix))
        except KeyError:
            continue  # the service never ran: it has no dead-letter queue yet
        finally:
            for delivery in taken:
                await delivery.reject(requeue=True)
    return found


async def redrive(transport: Transport, queue: str) -> int:
    """Send the queue's dead letters back to it for another round of attempts.

    Takes at most what was there when it started, so a message that fails again at
    once is not redriven in a loop.
    """
    dlq = dead_letter_queue(queue)
    budget = await transport.depth(dlq)
    moved = 0
    while moved < budget:
        delivery = await transport.get(dlq)
        if delivery is None:
            break
        message = delivery.message
        headers = {
            key: value
            for key, value in message.headers.items()
            if key not in _FAILURE_HEADERS
            and not key.startswith("x-death")
            and not key.startswith("x-first-death")
            and not key.startswith("x-last-death")
        }
        await transport.send_to_queue(queue, replace(message, headers=headers, routing_key=queue))
        await delivery.ack()
        moved += 1
    return moved


_FAILURE_HEADERS = frozenset(
    {
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        ERROR_CODE_HEADER,
        ERROR_DETAIL_HEADER,
        FAILED_AT_HEADER,
        ORIGIN_QUEUE_HEADER,
        "x-delivery-count",
    }
)
