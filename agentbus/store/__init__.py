"""Per-service storage: inbox, state and outbox in one transaction.

`open_database` picks SQLite under the data directory by default and PostgreSQL
when a `DATABASE_URL` is given; `StoreBinding` attaches a database and an outbox
relay to a service so that its handlers apply events exactly once.
"""

from typing import TYPE_CHECKING, Any

from agentbus.store.binding import Apply, StoreBinding
from agentbus.store.database import Database, Transaction, open_database
from agentbus.store.migrations import Migration, create_tables
from agentbus.store.relay import OutboxRelay

if TYPE_CHECKING:
    from alembic.operations import Operations

__all__ = [
    "Apply",
    "Database",
    "Migration",
    "Operations",
    "OutboxRelay",
    "StoreBinding",
    "Transaction",
    "create_tables",
    "open_database",
]


def __getattr__(name: str) -> Any:
    # Alembic is loaded only where it is used: a process whose database is up to date
    # never imports it (a third of a second of start-up).
    if name == "Operations":
        from alembic.operations import Operations

        return Operations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
