"""`agentbus run review`: the read model consumer and the web console in one process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentbus.envelope import Event, EventCodec
from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError
from agentbus.ops import AppServer
from agentbus.service import Context, Service, ServiceEnv
from agentbus.store import StoreBinding, Transaction
from consumers.review import readmodel
from consumers.review.auth import AuthConfig
from consumers.review.deciding import Reviewing
from consumers.review.notify import WebhookSender, notice_text
from events import CATALOG, InventoryLow, OrderCreated, PurchaseOrderCreated
from events.decisions import DECISIONS

if TYPE_CHECKING:
    from consumers.review.routes import Console

NAME = readmodel.NAME


class ReviewConsole:
    """The service, its database, its web server and its webhook sender."""

    def __init__(self, auth: AuthConfig | None = None, *, port: int | None = None) -> None:
        self.reviewing = Reviewing(DECISIONS)
        self.service = Service(
            NAME,
            description="Review console: people approve or reject suggestions in a browser.",
            publishes=self.reviewing.decision_types,
        )
        self.store = StoreBinding(self.service, readmodel.MIGRATIONS)
        self.codec = EventCodec(CATALOG)
        self._auth = auth
        environment = load_environment()
        self.port = port if port is not None else environment.review_port
        self.bind = environment.review_bind
        self.public_url = environment.review_public_url.rstrip("/")
        self.webhook_url = environment.review_webhook_url
        self.webhook_secret = environment.secret("review_webhook_secret") or ""
        self.console: Console | None = None
        self.server: AppServer | None = None
        self.sender: WebhookSender | None = None
        self._project()
        self.service.on_startup(self._start)
        self.service.on_shutdown(self._stop)

    def _project(self) -> None:
        store = self.store

        # Suggestions and decisions are routed by the types the agents declare (an open
        # set, read from the registry), so by string: these appliers read no field of a
        # particular class.
        @store.applies(*self.reviewing.suggestion_types)
        def suggested(tx: Transaction, event: Event[Any], ctx: Context) -> None:
            kind = readmodel.kind_of(event.type)
            envelope = self.codec.encode(event).decode()
            if readmodel.record_suggestion(tx, event, kind, envelope) and self.webhook_url:
                suggestion_id = readmodel.suggestion_id_of(event)
                link = f"{self.public_url or self._local_url()}/suggestions/{suggestion_id}"
                tx.execute(
                    tx.insert(readmodel.notices)
                    .values(
                        suggestion_id=suggestion_id,
                        text=notice_text(kind, event.data, link),
                        created_at=datetime.now(UTC),
                        attempts=0,
                    )
                    .on_conflict_do_nothing(index_elements=[readmodel.notices.c.suggestion_id])
                )

        @store.applies(*self.reviewing.decision_types)
        def decided(tx: Transaction, event: Event[Any], ctx: Context) -> None:
            self.reviewing.settle_from(tx, event)

        @store.applies(InventoryLow)
        def low(tx: Transaction, event: Event[InventoryLow], ctx: Context) -> None:
            data = event.data
            readmodel.record_context(
                tx,
                event,
                f"{data.sku}: {data.available} available ({data.on_hand} on hand, "
                f"{data.reserved} reserved), reorder point {data.reorder_point}",
            )

        @store.applies(OrderCreated)
        def ordered(tx: Transaction, event: Event[OrderCreated], ctx: Context) -> None:
            lines = ", ".join(f"{line.quantity} x {line.sku}" for line in event.data.lines[:20])
            readmodel.record_context(tx, event, f"order {event.data.order_id}: {lines}")

        @store.applies(PurchaseOrderCreated)
        def purchased(tx: Transaction, event: Event[PurchaseOrderCreated], ctx: Context) -> None:
            data = event.data
            readmodel.record_context(
                tx,
                event,
                f"{data.purchase_order_id}: {data.quantity} x {data.sku} from {data.supplier}",
            )
            readmodel.note_purchase_order(tx, data.recommendation_id, data.purchase_order_id)

        store.after_commit(self._changed)

    def _local_url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def _changed(self) -> None:
        if self.console is not None:
            self.console.changes.notify()
        if self.sender is not None:
            self.sender.wake()

    async def _start(self, env: ServiceEnv) -> None:
        auth = self._auth or AuthConfig.from_env()
        if auth.open_to_nobody:
            raise ConfigurationError(
                "the review console needs REVIEW_USERS (name:hash pairs) or REVIEW_TOKEN"
            )
        auth.upgrades.update(
            await self.store.database.run(lambda tx: readmodel.password_upgrades_of(tx.connection))
        )
        if self.webhook_url:
            if not self.webhook_secret:
                raise ConfigurationError(
                    "REVIEW_WEBHOOK_URL needs REVIEW_WEBHOOK_SECRET: every post is signed"
                )
            try:
                self.sender = WebhookSender(
                    self.store.database, self.webhook_url, self.webhook_secret
                )
            except ValueError as exc:
                raise ConfigurationError(f"REVIEW_WEBHOOK_SECRET: {exc}") from None
        # The web stack is imported as the console starts: every process of the shop loads
        # this service's declaration, and only this one serves pages.
        from consumers.review.routes import Console, build_app

        self.console = Console(
            database=lambda: self.store.database,
            wake_relay=self.store.relay.wake,
            codec=self.codec,
            auth=auth,
            reviewing=self.reviewing,
        )
        self.server = AppServer(
            build_app(self.console), self.port, bind=self.bind, what="the review console"
        )
        await self.server.start()
        self.port = self.server.port
        if self.sender is not None:
            await self.sender.start()

    async def _stop(self) -> None:
        if self.console is not None:
            self.console.changes.close()
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.sender is not None:
            await self.sender.stop()
            self.sender = None


def build() -> Service:
    return ReviewConsole().service
