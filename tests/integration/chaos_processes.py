"""The shop's processes and scratch places: `agentbus run` subprocesses that can be
SIGKILLed, the machine-wide lock on the shop's fixed queue names, and PostgreSQL
databases made and dropped per run."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

LOCK_PATH = Path(tempfile.gettempdir()) / "agentbus-shop-queues.lock"
CLUSTER_LOCK = Path(tempfile.gettempdir()) / "agentbus-cluster-shop-queues.lock"


class ServiceProcess:
    """One `agentbus run SERVICE` in a process group of its own (or another agentbus
    command that runs until stopped: `command`, ready once it prints `ready`)."""

    def __init__(
        self,
        service: str,
        env: dict[str, str],
        label: str | None = None,
        args: Sequence[str] = (),
        *,
        command: Sequence[str] | None = None,
        ready: str = "running ",
        log: Path | None = None,
    ) -> None:
        self.service = service
        self.args = tuple(args)
        self.label = label or service
        self.env = env
        self.command = ("run", service, *self.args) if command is None else tuple(command)
        self.ready = ready
        self.log = log  # every line of its stderr, across restarts, when set
        self.process: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self._running = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = 120.0) -> float:
        """Spawn it and wait until it consumes; returns how long that took."""
        started = time.monotonic()
        self._running = asyncio.Event()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbus",
            *self.command,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group
        )
        self._reader = asyncio.create_task(self._read(self.process, self._running))
        waiter = asyncio.create_task(self._running.wait())
        exited = asyncio.create_task(self.process.wait())
        try:
            await asyncio.wait({waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            exited.cancel()
        if not self._running.is_set():
            await self.stop(timeout=10)
            raise RuntimeError(f"{self.label} did not start in {timeout}s:\n{self.stderr()}")
        return time.monotonic() - started

    async def start_surely(self, timeout: float = 180.0) -> float:
        """Start it, again if it exits at once (a broker that is restarting refuses
        it); returns how long until it consumed."""
        began = time.monotonic()
        while True:
            try:
                await self.start()
                return time.monotonic() - began
            except RuntimeError:
                if time.monotonic() - began > timeout:
                    raise
                await asyncio.sleep(1.0)

    async def _read(self, process: asyncio.subprocess.Process, running: asyncio.Event) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            if self.log is not None:
                with self.log.open("a") as out:
                    out.write(text + "\n")
            if text.startswith(self.ready):
                running.set()

    def stderr(self) -> str:
        return "\n".join(self.tail)

    def freeze(self) -> None:
        """SIGSTOP the whole group: it holds what it has fetched and settles nothing more
        (a member of a group stays in it until its session times out)."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGSTOP)

    async def kill(self) -> None:
        """SIGKILL the whole group: no drain, no shutdown hooks, nothing acked."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain and exit 0 is the contract), SIGKILL after `timeout`."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        return process.returncode


@contextlib.asynccontextmanager
async def exclusive_queues(timeout: float = 1800.0, path: Path = LOCK_PATH) -> AsyncIterator[None]:
    """Hold the machine-wide lock on the shop's fixed queue names (one per broker)."""
    handle = path.open("a")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout}s") from None
                await asyncio.sleep(0.5)
        yield
    finally:
        handle.close()  # closing releases the lock


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_engine(url: str) -> sa.Engine:
    rest = url.partition("://")[2]
    return sa.create_engine(f"postgresql+psycopg://{rest}", isolation_level="AUTOCOMMIT")


async def create_database(server_url: str, name: str) -> str:
    """A fresh PostgreSQL database on the server of `server_url`; returns its URL."""

    def create() -> None:
        engine = _admin_engine(server_url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    await asyncio.to_thread(create)
    return _with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    def drop() -> None:
        engine = _admin_engine(server_url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    await asyncio.to_thread(drop)


async def command(*args: str, timeout: float = 180) -> None:
    """Run a command to its end; its output is in the error if it fails."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {(out + err).decode()[-500:]}")
