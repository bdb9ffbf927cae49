"""Signatures of outgoing webhooks, as Standard Webhooks defines them.

Each post carries `webhook-id` (the notice's id, the same on every retry),
`webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,` and the base64
HMAC-SHA256, under the shared secret, of `{id}.{timestamp}.{body}`. A receiver
recomputes it over the raw body it got, compares in constant time, and refuses a
timestamp too far from its clock (a replayed post).

The secret is `whsec_` and base64 (as Standard Webhooks libraries make it), or
any other string, whose UTF-8 bytes are then the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["TOLERANCE", "SignatureInvalid", "sign", "verify"]

TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its clock
PREFIX = "whsec_"


class SignatureInvalid(ValueError):
    """A post whose signature does not verify: refuse it."""


def key_of(secret: str) -> bytes:
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret[len(PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    if not secret:
        raise ValueError("the webhook secret is empty")
    return secret.encode()


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, message_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that sign `body` as message `message_id`."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": _signature(key_of(secret), message_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> None:
    """The receiver's check; raises `SignatureInvalid` unless `body` is as signed.

    `headers` with lower-case names; `body` the raw bytes received, before parsing.
    """
    message_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    if not message_id or not raw_timestamp.isdigit():
        raise SignatureInvalid("webhook-id and webhook-timestamp are required")
    timestamp = int(raw_timestamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise SignatureInvalid("the timestamp is too far from now")
    expected = _signature(key_of(secret), message_id, timestamp, body)
    # The header may list several signatures (a secret being rotated), space-separated.
    for given in headers.get("webhook-signature", "").split():
        if hmac.compare_digest(given.encode(), expected.encode()):
            return
    raise SignatureInvalid("no signature matches")
