"""Per-service storage: inbox, state and outbox in one transaction.

`open_database` picks SQLite under the data directory by default and PostgreSQL
when a `DATABASE_URL` is given; `StoreBinding` attaches a database and an outbox
relay to a service so that its handlers apply events exactly once.
"""

from alembic.operations import Operations

from agentbus.store.binding import Apply, StoreBinding
from agentbus.store.database import Database, Transaction, open_database
from agentbus.store.migrations import Migration, create_tables
from agentbus.store.relay import OutboxRelay

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
