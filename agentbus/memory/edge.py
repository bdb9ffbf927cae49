"""The embedded default: Qdrant's Rust engine in-process (qdrant-edge-py).

One shard (a folder) per collection under `path`. What the engine does, as
measured with qdrant-edge-py 0.9, and how this module answers it:

- The binding holds the GIL through its calls. They go through one worker
  thread, which serializes access to the shards, and the event loop waits for
  at most one call at a time: about a millisecond for a search, 0.1 s for the
  load or close of a 100k-point shard when an index is swapped in. Since the
  loop cannot run meanwhile anyway, an offline replay (`on_loop`) makes its
  calls on the loop: each hand-off to the thread and back cost it ~3 ms of
  waiting for the GIL against a 0.35 ms write, and the replay 4% of its time.
- A shard builds its HNSW index only inside `optimize()`, which holds the GIL
  for as long as it runs: tens of seconds at 20k points, minutes at 100k. In
  this process that would freeze the event loop, so indexing runs in a child
  process on a copy of the shard; the copy is swapped in when it is done, with
  the writes made meanwhile replayed onto it. Until then searches read the
  unindexed points by brute force, which is exact, only slower.
- `MatchValue(True)` is read as the integer 1 (the binding tries int before
  bool), so booleans are passed as numpy booleans, which it reads as bool.
- Writes go to a write-ahead log first: a point is durable once `upsert`
  returns, without a flush of the segments (up to 0.3 s at 100k points).
- An HNSW graph finds the wrong neighbours among vectors that look random, and
  embeddings of many similar episodes look more like that than like neat
  clusters: at 100k random 384-dimension vectors, recall@5 was 0.17 with the
  default graph and 0.48 at ef=512. So no graph (`m=0`): an optimized segment
  keeps 4-bit TurboQuant codes in RAM, a search scans them all and rescores
  `OVERSAMPLING` times the limit with the full vectors (recall@5 1.0, 1.2 ms
  at 100k; benchmarks/memory_retrieval.py). A scan grows with the points:
  past a few hundred thousand per collection, use a Qdrant server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar, cast

import qdrant_edge as qe

from agentbus.errors import ConfigurationError
from agentbus.memory.base import Hit, Point, Where
from agentbus.store.lease import FileLease

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Collection names become folder names: no dots, so they never meet the suffixes below.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_INDEXING = ".indexing"  # a copy of the shard being indexed by a child process
_RETIRED = ".retired"  # the shard a finished copy replaced, until it is deleted
_CHUNK = 256  # points per engine call: the event loop gets the GIL between chunks
# Candidates found on the quantized codes, per result, rescored on the full vectors.
OVERSAMPLING = 4.0
_SEARCH = qe.SearchParams(
    quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
)

# The child that indexes a copy. It runs at a lower priority so that the
# services keep the CPU, and on Linux it dies with this process instead of
# outliving it (a signal's default action works even while optimize() holds the
# GIL; the thread that starts the child waits for it, as PR_SET_PDEATHSIG requires).
_CHILD = """
import os, sys
if sys.platform == "linux":
    import ctypes, signal
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if hasattr(os, "nice"):
    os.nice(10)
import qdrant_edge
shard = qdrant_edge.EdgeShard.load(sys.argv[1])
shard.optimize()
shard.flush()
shard.close()
"""


def _match(value: str | int | bool) -> qe.MatchValue:
    if isinstance(value, bool):
        import numpy  # a dependency of qdrant-client; needed only for this workaround

        return qe.MatchValue(cast(bool, numpy.bool_(value)))
    return qe.MatchValue(value)


def _match_any(values: Sequence[str] | Sequence[int]) -> qe.MatchAny:
    if all(isinstance(v, str) for v in values):
        return qe.MatchAny([str(v) for v in values])
    return qe.MatchAny([int(v) for v in values])


def _filter(where: Where | None) -> qe.Filter | None:
    if not where:
        return None
    return qe.Filter(
        must=[
            qe.FieldCondition(
                key=k,
                match=_match(v) if isinstance(v, str | int | bool) else _match_any(v),
            )
            for k, v in where.items()
        ]
    )


@dataclass
class _Collection:
    shard: qe.EdgeShard
    dim: int | None = None  # known once created or checked by ensure_collection
    # Writes made while a copy is being indexed, replayed onto the copy before the swap.
    replay: list[qe.UpdateOperation] | None = None
    run: Future[None] | None = None
    # Unindexed points the last run left (the engine found them too few to index):
    # the next run waits until a threshold's worth more arrive.
    floor: int = 0


def _claim(path: Path) -> FileLease:
    """Hold the store's folder for this process, or refuse at once.

    The engine locks each shard only when it is first loaded, so a second process
    used to start fine and then fail every write with `WouldBlock`, retrying and
    dead-lettering its triggers. A lock on the folder, which dies with its holder,
    turns that into one line at start."""
    path.mkdir(parents=True, exist_ok=True)
    owner = FileLease(path / ".owner")
    if not owner.acquire():
        raise ConfigurationError(
            f"the embedded vector store {path.resolve()} is open in another process: run the "
            "services that use it in one process (e.g. `agentbus run memory restock-agent`) "
            "or point them all at a Qdrant server with QDRANT_URL"
        )
    return owner


class EdgeStore:
    """Collections as qdrant-edge shards under `path`, indexed in the background.

    `indexing_threshold_kb` is the engine's own: vectors beyond this size in
    unindexed segments get an HNSW index (10,000 KB is about 6,500 points of 384
    dimensions, which brute force reads in about a millisecond).
    """

    def __init__(
        self, path: Path, *, indexing_threshold_kb: int = 10_000, on_loop: bool = False
    ) -> None:
        self.path = path
        self._on_loop = on_loop
        # One caller of the shards at a time: the worker thread, or the loop (`on_loop`)
        # and the worker thread swapping an indexed copy in.
        self._shards = threading.Lock()
        self._owner = _claim(path)
        self.indexing_threshold_kb = indexing_threshold_kb
        self._collections: dict[str, _Collection] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentbus-vectors")
        self._lock = threading.Lock()  # guards _children and _closing across run threads
        self._children: set[subprocess.Popen[bytes]] = set()
        self._closing = False

    async def _call(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._on_loop:
            return self._exclusive(work, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._exclusive, work, *args, **kwargs)
        )

    def _exclusive(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._shards:
            return work(*args, **kwargs)

    def _folder(self, name: str, suffix: str = "") -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"collection name {name!r}: use letters, digits, '_' and '-'")
        return self.path / f"{name}{suffix}"

    def _config(self, dim: int) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            # m=0: no graph; optimized segments are scanned through their quantized codes.
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
            quantization_config=qe.TurboQuantQuantizationConfig(
                bits=qe.TurboQuantBitSize.Bits4, memory=qe.Memory.Pinned
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb),
        )

    # Everything below that touches a shard runs on the worker thread.

    def _open(self, name: str, config: qe.EdgeConfig | None = None) -> _Collection | None:
        """The collection, loading it from disk on first use; None when it does not exist."""
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        folder, retired = self._folder(name), self._folder(name, _RETIRED)
        if not folder.exists() and retired.exists():
            retired.rename(folder)  # a swap stopped half-way: the old shard is complete
        if not folder.exists():
            return None
        try:
            shard = qe.EdgeShard.load(str(folder), config)
        except Exception as exc:  # the binding raises plain Exception
            raise ConfigurationError(f"vector collection {name!r} at {folder}: {exc}") from exc
        # We hold the shard now: what an earlier process left half-done is garbage.
        shutil.rmtree(retired, ignore_errors=True)
        shutil.rmtree(self._folder(name, _INDEXING), ignore_errors=True)
        info = shard.info()
        collection = _Collection(shard, floor=info.points_count - info.indexed_vectors_count)
        if config is not None:
            collection.dim = config.vectors[""].size
        self._collections[name] = collection
        return collection

    def _get(self, name: str) -> _Collection:
        collection = self._open(name)
        if collection is None:
            raise KeyError(name)
        return collection

    def _update(self, name: str, collection: _Collection, operation: qe.UpdateOperation) -> None:
        collection.shard.update(operation)
        if collection.replay is not None:
            collection.replay.append(operation)

    def _ensure(self, name: str, dim: int, indexed: Sequence[str]) -> None:
        # Loading with the config checks the dimension against the stored vectors.
        collection = self._open(name, self._config(dim))
        if collection is None:
            self.path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(self._folder(name)), self._config(dim))
            collection = self._collections[name] = _Collection(shard, dim=dim)
        elif collection.dim is None:
            # Opened earlier without a config (a search came first): a query of the
            # wrong length is how the engine tells us the dimension differs.
            try:
                collection.shard.query(
                    qe.QueryRequest(limit=1, query=qe.Query.Nearest([0.0] * dim))
                )
            except Exception as exc:
                raise ConfigurationError(f"vector collection {name!r}: {exc}") from exc
            collection.dim = dim
        elif collection.dim != dim:
            raise ConfigurationError(
                f"vector collection {name!r} holds {collection.dim}-dimension vectors, not {dim}"
            )
        present = collection.shard.info().payload_schema
        for field in indexed:
            if field not in present:
                operation = qe.UpdateOperation.create_field_index(
                    field, qe.PayloadSchemaType.Keyword
                )
                self._update(name, collection, operation)

    def _upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        collection = self._get(name)
        for start in range(0, len(points), _CHUNK):
            chunk = [
                qe.Point(id=p.id, vector=list(p.vector), payload=p.payload)
                for p in points[start : start + _CHUNK]
            ]
            self._update(name, collection, qe.UpdateOperation.upsert_points(chunk))
        if collection.run is None:
            info = collection.shard.info()
            unindexed = info.points_count - info.indexed_vectors_count
            threshold = self.indexing_threshold_kb * 1024 // (4 * len(points[0].vector))
            if unindexed - collection.floor >= threshold:
                self._start_indexing(name, collection)

    def _search(
        self, name: str, vector: Sequence[float], limit: int, where: Where | None
    ) -> list[Hit]:
        found = self._get(name).shard.query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(list(vector)),
                filter=_filter(where),
                params=_SEARCH,
                with_payload=True,
            )
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def _count(self, name: str) -> int:
        return int(self._get(name).shard.count(qe.CountRequest(exact=True)))

    def _close_all(self) -> None:
        for collection in self._collections.values():
            collection.shard.flush()
            collection.shard.close()
        self._collections.clear()

    # Background indexing: copy on the worker thread, index in a child process,
    # swap on the worker thread. A run thread waits for the child in between.

    def _start_indexing(self, name: str, collection: _Collection) -> Future[None]:
        copy = self._folder(name, _INDEXING)
        shutil.rmtree(copy, ignore_errors=True)
        collection.shard.flush()  # the segments on disk must hold every write before the copy
        shutil.copytree(self._folder(name), copy)
        collection.replay = []
        done: Future[None] = Future()
        collection.run = done
        threading.Thread(
            target=self._index_in_child,
            args=(name, done),
            name=f"agentbus-vectors-index-{name}",
            daemon=True,  # never holds up interpreter exit; the child dies with us
        ).start()
        return done

    def _index_in_child(self, name: str, done: Future[None]) -> None:
        copy = self._folder(name, _INDEXING)
        try:
            failure = self._run_child(copy)
            try:
                swapped = self._executor.submit(self._exclusive, self._swap_in, name, failure)
            except RuntimeError:  # the executor is shut down: the store closed meanwhile
                shutil.rmtree(copy, ignore_errors=True)
                return
            swapped.result()
        except Exception:
            log.exception("vector collection %s: indexing failed", name)
        finally:
            done.set_result(None)

    def _run_child(self, copy: Path) -> str | None:
        """Index `copy` in a child process; None on success, else what went wrong."""
        with self._lock:
            if self._closing:
                return "the store is closing"
            try:
                child = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(copy)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                return f"cannot start {sys.executable}: {exc}"
            self._children.add(child)
        try:
            _, err = child.communicate()
        finally:
            with self._lock:
                self._children.discard(child)
        if child.returncode == 0:
            return None
        return err.decode(errors="replace").strip()[-2000:] or f"exit status {child.returncode}"

    def _swap_in(self, name: str, failure: str | None) -> None:
        collection = self._collections.get(name)
        folder = self._folder(name)
        copy, retired = self._folder(name, _INDEXING), self._folder(name, _RETIRED)
        if collection is None or self._closing or failure is not None:
            if failure is not None and not self._closing:
                log.warning("vector collection %s: indexing failed: %s", name, failure)
            shutil.rmtree(copy, ignore_errors=True)
            if collection is not None:
                self._end_run(collection, floor=None)
            return
        floor: int | None = None
        if collection.replay:
            # Bring the copy up to date and close it before touching the live folder, so
            # that a crash at any step leaves a complete shard for _open to recover.
            # (Each load and close holds the GIL for about 0.1 s at 100k points: this
            # extra pair is paid only when writes came in during the run.)
            try:
                fresh = qe.EdgeShard.load(str(copy))
                info = fresh.info()
                floor = info.points_count - info.indexed_vectors_count
                for operation in collection.replay:
                    fresh.update(operation)
                fresh.flush()
                fresh.close()
            except Exception:
                log.exception("vector collection %s: the indexed copy is unusable", name)
                shutil.rmtree(copy, ignore_errors=True)
                self._end_run(collection, floor=None)
                return
        try:
            collection.shard.close()
            folder.rename(retired)
            copy.rename(folder)
            collection.shard = qe.EdgeShard.load(str(folder))
        except Exception:
            log.exception("vector collection %s: swapping in the indexed copy failed", name)
            del self._collections[name]  # the next call reopens from disk (see _open)
            return
        shutil.rmtree(retired, ignore_errors=True)
        self._end_run(collection, floor=floor)

    def _end_run(self, collection: _Collection, floor: int | None) -> None:
        # By default what is unindexed now: after a failed run, or when nothing was replayed.
        if floor is None:
            info = collection.shard.info()
            floor = info.points_count - info.indexed_vectors_count
        collection.floor = floor
        collection.replay = None
        collection.run = None

    def _indexing_run(self, name: str) -> tuple[Future[None], bool] | None:
        collection = self._get(name)
        if collection.run is not None:
            return collection.run, False
        info = collection.shard.info()
        if info.points_count - info.indexed_vectors_count <= collection.floor:
            return None
        return self._start_indexing(name, collection), True

    # The port.

    async def ensure_collection(self, name: str, dim: int, indexed: Sequence[str] = ()) -> None:
        await self._call(self._ensure, name, dim, tuple(indexed))

    async def upsert(self, name: str, points: Sequence[Point]) -> None:
        await self._call(self._upsert, name, list(points))

    async def search(
        self, name: str, vector: Sequence[float], *, limit: int = 10, where: Where | None = None
    ) -> list[Hit]:
        return await self._call(self._search, name, vector, limit, where)

    async def count(self, name: str) -> int:
        return await self._call(self._count, name)

    async def optimize(self, name: str) -> None:
        """Index what is not indexed yet and wait until it is (benchmarks, tests, bulk loads).

        Upserts start indexing on their own; this only saves waiting for the threshold.
        """
        while True:
            run = await self._call(self._indexing_run, name)
            if run is None:
                return
            done, started_here = run
            await asyncio.wrap_future(done)
            if started_here:
                return

    async def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            children = list(self._children)
        for child in children:
            child.terminate()  # its copy is discarded; the live shard has every write
        await self._call(self._close_all)
        self._executor.shutdown(wait=True)
        self._owner.release()
