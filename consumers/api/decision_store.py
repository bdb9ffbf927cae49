"""Where the API decides suggestions: in the review console's database, not its own.

Two doors (the console and the API) each deciding in a database of their own could
both pass their own conditional update before either decision event reached the
other, and emit two decisions for one suggestion. So the console's database is the one
owner: its suggestion row, whose update out of `pending` only one decision passes,
its audit log, and its outbox, through which the decision event leaves in the same
transaction. The API's idempotency keys of decisions are kept there too, so that a
key, its decision, the audit row and the event commit together. The API opens it as
the console does (`DATABASE_URL`, a schema `review`, or `review.db` under
`AGENTBUS_DATA`), applies the console's migrations if the console has not run yet, and
runs a relay on that outbox too: the relay lease lets one of the two publish at a
time, and decisions leave even while the console is down.
"""

from __future__ import annotations

from agentbus.envelope import EventCodec
from agentbus.service import ServiceEnv
from agentbus.store import Database, open_database
from agentbus.store.relay import OutboxRelay
from consumers.api.tables import DECISION_KEYS
from consumers.review import readmodel

OWNER = readmodel.NAME


class DecisionStore:
    """The console's database and a relay on its outbox, opened with the API."""

    def __init__(self) -> None:
        self._database: Database | None = None
        self._relay: OutboxRelay | None = None

    @property
    def database(self) -> Database:
        if self._database is None:
            raise RuntimeError("the decision store is not open")
        return self._database

    def wake_relay(self) -> None:
        if self._relay is not None:
            self._relay.wake()

    async def open(self, env: ServiceEnv, codec: EventCodec) -> None:
        database = open_database(
            OWNER, codec, url=env.settings.database_url, data_dir=env.settings.data_dir
        )
        try:
            # The console's own steps: safe while it applies them too (one lock).
            await database.migrate([*readmodel.MIGRATIONS, *DECISION_KEYS])
            relay = OutboxRelay(database, env.bus, name=OWNER)
            await relay.start()
        except BaseException:
            await database.close()
            raise
        self._database, self._relay = database, relay

    async def close(self) -> None:
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._database is not None:
            await self._database.close()
            self._database = None
