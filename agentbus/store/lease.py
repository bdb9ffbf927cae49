"""Which process may run the outbox relay of a database: one at a time.

Two relays publishing one outbox would interleave a subject's events. A lease
that dies with its holder keeps it to one without any timeout to tune: an
advisory lock held by a session on PostgreSQL, a file lock beside the SQLite file.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa


class Lease(Protocol):
    def acquire(self) -> bool:
        """Take (or keep) the lease; False while another process holds it."""
        ...

    def release(self) -> None: ...


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._handle is not None:
            return True
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class AdvisoryLease:
    def __init__(self, engine: sa.Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._connection: sa.Connection | None = None

    def acquire(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.DBAPIError:
                self.release()  # the session died, and the lock with it
        connection = self.engine.connect()
        taken = connection.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext(:name))"), {"name": self.name}
        ).scalar()
        connection.commit()
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._connection.close()
            self._connection = None
