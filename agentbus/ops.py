"""What orchestrators and scrapers ask a running service: /healthz, /readyz, /metrics.

`/healthz` answers while the event loop does: a process that stopped answering
should be restarted. `/readyz` answers 200 only while the consumers run and the
broker and every database answer, with the problems in the body otherwise.
`/metrics` is the Prometheus text format of the process's OpenTelemetry metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from agentbus.errors import ConfigurationError
from agentbus.host import Host


def ops_app(host: Host) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        problems = await host.readiness()
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def prometheus(_: Request) -> Response:
        if host.running:
            await host.refresh_gauges()
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", prometheus),
        ]
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host owns SIGINT and SIGTERM: it drains the consumers, then stops us.
        yield


class AppServer:
    """An ASGI app served on `bind:port` inside the running event loop (port 0: any)."""

    def __init__(
        self, app: ASGIApp, port: int, *, bind: str = "0.0.0.0", what: str = "http"
    ) -> None:
        config = uvicorn.Config(
            app,
            host=bind,
            port=port,
            log_level="warning",
            lifespan="off",
            # Open event streams would hold a shutdown forever.
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._bind = bind
        self._what = what
        self.port = port

    async def start(self) -> None:
        # Bound here rather than by uvicorn, which exits the process when it cannot bind.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._bind, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"cannot serve {self._what} on {self._bind}:{self.port}: {exc.strerror}"
            ) from None
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        # uvicorn sets a flag, not an event, once it listens.
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


class OpsServer(AppServer):
    """The ops endpoints of a host, served on `port` beside its consumers."""

    def __init__(self, host: Host, port: int, *, bind: str = "0.0.0.0") -> None:
        super().__init__(ops_app(host), port, bind=bind, what="metrics")


class GaugeRefresher:
    """Reads queue depths and outbox backlogs every `interval` seconds for periodic exports."""

    def __init__(self, host: Host, interval: float = 10.0) -> None:
        self.host = host
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            if self.host.running:
                await self.host.refresh_gauges()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
