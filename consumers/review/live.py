"""Open pages kept current: the read model's changes, told over server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from starlette.responses import StreamingResponse

CHANGED = "changed"
# A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15


class Changes:
    """Tells open pages that the read model changed."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[str | None]] = set()

    def notify(self) -> None:
        self._tell(CHANGED)

    def close(self) -> None:
        """Ends every stream, so the server's shutdown waits for none of them."""
        self._tell(None)

    def _tell(self, message: str | None) -> None:
        for queue in list(self._listeners):
            # A page that has not read its last notices needs no more of them.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(message)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[str | None]]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)


def stream(changes: Changes) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        with changes.listen() as queue:
            yield "retry: 2000\n\n"
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": still here\n\n"
                    continue
                if change is None:
                    return
                yield f"event: {change}\ndata: {change}\n\n"

    # X-Accel-Buffering: nginx would otherwise hold the events back.
    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )
