"""One vector store per process and data folder.

The embedded engine keeps its files to one process, so services sharing a process
(the demo, `agentbus run memory restock-agent`) must share one store; across
processes, point them at a Qdrant server with `QDRANT_URL`.
"""

from __future__ import annotations

from pathlib import Path

from agentbus.environment import load_environment
from agentbus.memory import VectorStore, open_vector_store
from agentbus.settings import Settings

_stores: dict[tuple[str, str | None], VectorStore] = {}


def shared_vector_store(settings: Settings) -> VectorStore:
    """The store of `settings.data_dir`, opened by the first service to ask for it."""
    url = load_environment().qdrant_url
    key = (str(settings.data_dir.resolve()), url)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = open_vector_store(
            settings.data_dir, url, on_loop=settings.stores_on_loop
        )
    return store


def forget_shared_stores() -> None:
    """Drop the registry (tests that open many data folders)."""
    _stores.clear()


def release_shared_store(data_dir: Path) -> VectorStore | None:
    """Forget the store of one data folder and hand it back for closing (a finished replay)."""
    url = load_environment().qdrant_url
    return _stores.pop((str(data_dir.resolve()), url), None)
