"""The API serving on a real socket from a thread of its own, for clients that call
it synchronously (the fuzzer)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentbus.envelope import Event
from tests.api.shop import api_shop


@contextmanager
def serving(tmp_path: Path, seed: Sequence[Event[Any]] = ()) -> Iterator[str]:
    """The base URL of the running API, with `seed` published before it is handed out."""
    ready = threading.Event()
    found: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def run() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with api_shop(tmp_path) as shop:
                await shop.shop.publish(list(seed))
                assert shop.api.server is not None
                found["url"] = f"http://127.0.0.1:{shop.api.server.port}"
                ready.set()
                await stop.wait()
        except BaseException as exc:
            found["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in found or "url" not in found:
        raise RuntimeError(f"the API did not start: {found.get('error')!r}")
    try:
        yield str(found["url"])
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
