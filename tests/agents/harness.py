"""A shop for agent tests: real services on SQLite, on the in-process broker or on a real
one's transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentbus.agent.runtime import AgentRunner
from agentbus.agent.sqlite_checkpoints import ThreadedSqliteSaver
from agentbus.envelope import Event, new_event
from agentbus.service import Service
from agentbus.testing import Harness
from agentbus.transport.base import Transport
from events import CATALOG, InventoryLow, OrderCreated, ProductUpserted

START = datetime(2026, 11, 2, 9, tzinfo=UTC)


class Shop(Harness):
    """The platform's test harness with the shop's catalog."""

    def __init__(
        self,
        data_dir: Path,
        services: Sequence[Service],
        transport: Transport | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        super().__init__(
            data_dir, services, catalog=CATALOG, transport=transport, database_url=database_url
        )


def product(sku: str, *, max_stock: int = 40, description: str = "A fine thing.") -> Event[Any]:
    return new_event(
        ProductUpserted(
            sku=sku,
            name=f"Product {sku}",
            description=description,
            category="kitchen",
            unit_cost=5,
            unit_price=9.5,
            lead_time_days=3,
            reorder_point=10,
            max_stock=max_stock,
            supplier="acme",
        ),
        source="/tests",
        id=f"product-{sku}",
        time=START,
    )


def order(order_id: str, sku: str, quantity: int, day: int, note: str | None = None) -> Event[Any]:
    return new_event(
        OrderCreated(
            order_id=order_id,
            customer_id="c-1",
            currency="EUR",
            note=note,
            lines=[{"sku": sku, "quantity": quantity, "unit_price": 9.5}],
        ),
        source="/tests",
        id=f"order-{order_id}",
        time=START + timedelta(days=day),
    )


def low(sku: str, n: int, *, day: int = 10, max_stock: int = 40) -> Event[Any]:
    return new_event(
        InventoryLow(
            sku=sku,
            available=4,
            on_hand=6,
            reserved=2,
            reorder_point=10,
            max_stock=max_stock,
            lead_time_days=3,
        ),
        source="/tests",
        id=f"low-{sku}-{n}",
        time=START + timedelta(days=day, minutes=n),
    )


def commit_failing_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first run's commit fails as if the process died after the run; the list
    records that it did."""
    original = AgentRunner._commit
    crashes: list[int] = []

    def commit_once_failing(self: AgentRunner, *args: Any) -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("process died between the run and the commit")
        original(self, *args)

    monkeypatch.setattr(AgentRunner, "_commit", commit_once_failing)
    return crashes


def damaged_before_resuming(
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[AgentRunner, Event[Any], str], Awaitable[None]],
) -> list[int]:
    """The first run's commit fails, as if the process died after the run; before the run
    resumes, `damage(runner, trigger, thread_id)` does to its checkpoint what a fault
    could. The list records the crash."""
    crashes = commit_failing_once(monkeypatch)
    original = AgentRunner._run
    damaged: list[str] = []

    async def run(
        self: AgentRunner, event: Event[Any], thread_id: str, span: Any, *, fresh: bool
    ) -> Any:
        if not fresh and not damaged:
            damaged.append(thread_id)
            await damage(self, event, thread_id)
        return await original(self, event, thread_id, span, fresh=fresh)

    monkeypatch.setattr(AgentRunner, "_run", run)
    return crashes


async def lose_checkpoints_after(saver: Any, thread_id: str, checkpoint_id: str) -> None:
    """Delete the thread's checkpoints newer than `checkpoint_id`, keeping every task's
    saved writes: what a kill or a database restart leaves when a step's writes landed
    and the checkpoint after the step did not (LangGraph saves checkpoints in the
    background while the next step runs)."""
    statement = "DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_id > %s"
    if isinstance(saver, ThreadedSqliteSaver):

        def delete() -> None:
            with saver.cursor() as cursor:
                cursor.execute(statement.replace("%s", "?"), (thread_id, checkpoint_id))

        await saver._off(delete)
        return
    async with saver.conn.connection() as connection:  # PostgreSQL's saver: a pool
        await connection.execute(statement, (thread_id, checkpoint_id))
