"""Sign-in throttling: failures counted per account and per client address.

A guesser is slowed on one account from many addresses (the account's count) and
on many accounts from one address (the address's count). Counts live in the
process: a console run as several processes multiplies the allowance by their
number, which is still far below what an unthrottled form allows.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

ACCOUNT_FAILURES = 10
ADDRESS_FAILURES = 50
WINDOW_S = 900.0
_MAX_TRACKED = 10_000  # keys kept at most, so a flood of names cannot grow memory without end


class SignInThrottle:
    def __init__(
        self,
        *,
        per_account: int = ACCOUNT_FAILURES,
        per_address: int = ADDRESS_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, account: str, address: str) -> int | None:
        """Seconds to wait before another try, or None when a try may go ahead."""
        now = self._clock()
        waits = [
            self._wait(f"account:{account.lower()}", self.per_account, now),
            self._wait(f"address:{address}", self.per_address, now),
        ]
        longest = max((w for w in waits if w is not None), default=None)
        return None if longest is None else max(1, math.ceil(longest))

    def failed(self, account: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= _MAX_TRACKED:
            self._forget_expired(now)
        for key in (f"account:{account.lower()}", f"address:{address}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, account: str) -> None:
        # The address keeps its count: one good password does not clear guesses at others.
        self._failures.pop(f"account:{account.lower()}", None)

    def _wait(self, key: str, limit: int, now: float) -> float | None:
        times = self._failures.get(key)
        if not times:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < limit:
            return None
        # Free again when the oldest failure that keeps the count at the limit expires.
        return times[-limit] + self.window_s - now

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
            del self._failures[key]
