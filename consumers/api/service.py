"""`agentbus run api`: the HTTP API and the consumer of the events it answers from,
in one process, on one database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentbus.envelope import Event, EventCodec
from agentbus.environment import load_environment
from agentbus.ops import AppServer
from agentbus.service import Context, Service, ServiceEnv
from agentbus.store import Apply as StoreApply
from agentbus.store import StoreBinding, Transaction
from consumers.api.auth import Tokens
from consumers.api.decision_store import DecisionStore
from consumers.api.projections import APPLIERS, Apply
from consumers.api.tables import MIGRATIONS, NAME
from consumers.review import readmodel
from consumers.review.deciding import Reviewing
from events import CATALOG
from events.decisions import DECISIONS

if TYPE_CHECKING:
    from consumers.api.app import ApiContext

WRITES = ("order.created", "order.cancelled", "product.upserted", "stock.received")


class HttpApi:
    """The service, its database and its web server."""

    def __init__(self, tokens: Tokens | None = None, *, port: int | None = None) -> None:
        self.reviewing = Reviewing(DECISIONS)
        self.service = Service(
            NAME,
            description="HTTP API: orders, catalog, stock and decisions on suggestions.",
            publishes=(*WRITES, *self.reviewing.decision_types),
            serves_metrics=True,
        )
        self.store = StoreBinding(self.service, MIGRATIONS)
        self.codec = EventCodec(CATALOG)
        self._tokens = tokens
        environment = load_environment()
        self.port = port if port is not None else environment.api_port
        self.bind = environment.api_bind
        self.server: AppServer | None = None
        self.decisions = DecisionStore()
        self._project()
        self.service.on_startup(self._start)
        self.service.on_shutdown(self._stop)

    def _project(self) -> None:
        store = self.store
        # The projections are typed where `projects` registers them; here they are a
        # table by type string, which the API's own writes look up too.
        for event_type, apply in APPLIERS.items():
            store.applies(event_type)(_as_applier(apply))

        # Suggestions and decisions are routed by the types the agents declare (an open
        # set, read from the registry), so by string.
        @store.applies(*self.reviewing.suggestion_types)
        def suggested(tx: Transaction, event: Event[Any], ctx: Context) -> None:
            envelope = self.codec.encode(event).decode()
            readmodel.record_suggestion(tx, event, readmodel.kind_of(event.type), envelope)

        @store.applies(*self.reviewing.decision_types)
        def decided(tx: Transaction, event: Event[Any], ctx: Context) -> None:
            self.reviewing.settle_from(tx, event)

    def context(self) -> ApiContext:
        # FastAPI is imported as the server starts: every process of the shop loads this
        # service's declaration, and only this one serves HTTP.
        from consumers.api.app import ApiContext

        return ApiContext(
            database=lambda: self.store.database,
            wake_relay=lambda: self.store.relay.wake(),
            codec=self.codec,
            tokens=self._tokens or Tokens.from_env(),
            reviewing=self.reviewing,
            ready=self._ready,
            decisions=lambda: self.decisions.database,
            wake_decisions=self.decisions.wake_relay,
        )

    async def _ready(self) -> None:
        await self.store.database.read(lambda c: c.execute(sa.text("SELECT 1")))

    async def _start(self, env: ServiceEnv) -> None:
        await self.decisions.open(env, self.codec)
        from consumers.api.app import build_app

        app = build_app(self.context())
        self.server = AppServer(app, self.port, bind=self.bind, what="the API")
        await self.server.start()
        self.port = self.server.port

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        await self.decisions.close()


def _as_applier(apply: Apply[Any]) -> StoreApply[Any]:
    def applier(tx: Transaction, event: Event[Any], ctx: Context) -> None:
        apply(tx, event)

    return applier


def build() -> Service:
    return HttpApi().service
