"""Bearer tokens from `AGENTBUS_API_TOKENS`, compared in constant time.

A client is known by a digest of its token, never the token itself: it scopes
idempotency keys and names the reviewer of a decision made over the API.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError


@dataclass(frozen=True)
class Tokens:
    digests: tuple[bytes, ...]

    @classmethod
    def from_env(cls) -> Tokens:
        raw = load_environment().secret("api_tokens") or ""
        return cls.of([token.strip() for token in raw.split(",") if token.strip()])

    @classmethod
    def of(cls, tokens: list[str]) -> Tokens:
        if not tokens:
            raise ConfigurationError("the API needs AGENTBUS_API_TOKENS (comma-separated tokens)")
        return cls(tuple(_digest(token) for token in tokens))

    def client_of(self, authorization: str | None) -> str | None:
        """The client's id for an `Authorization` header value, or None if refused."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        matched = False
        # Every token is compared, so the time taken says nothing of which one matched.
        for known in self.digests:
            matched |= hmac.compare_digest(digest, known)
        return digest.hex()[:16] if matched else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
