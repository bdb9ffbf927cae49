"""Who may review: users with argon2id password hashes, or one shared token, from config.

`REVIEW_USERS` lists `name:hash` pairs separated by commas (hashes from
`python -m consumers.review.auth NAME`, which asks for the password). Hashes made
with scrypt before still verify; a sign-in with one makes an argon2id hash that the
console keeps (`upgrades`) for as long as the configured hash is the same one.
`REVIEW_TOKEN` lets anyone holding it in (as user `token`). Sessions are signed
cookies keyed by `REVIEW_SECRET`; without it a random key is drawn, so sessions
end when the process does. Nothing here ever logs a password, hash or token.
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agentbus.environment import load_environment
from agentbus.errors import ConfigurationError

TOKEN_USER = "token"
# argon2-cffi's defaults are RFC 9106's second recommendation (t=3, 64 MiB, p=4),
# above OWASP's minimum for argon2id (t=2, 19 MiB, p=1).
_HASHER = PasswordHasher()
# A PHC string has commas of its own (m=...,t=...,p=...), so the pairs of
# REVIEW_USERS are found by the shape of a hash, not by splitting on commas.
_ARGON2 = r"\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
_SCRYPT = r"scrypt\$[^,\s]+"
_PAIR = re.compile(rf"\s*([^:,\s]+):({_ARGON2}|{_SCRYPT})\s*(?:,|$)")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return _verify_scrypt(password, stored)


def needs_upgrade(stored: str) -> bool:
    """An scrypt hash, or an argon2 one made with weaker settings than today's."""
    return not stored.startswith("$argon2") or _HASHER.check_needs_rehash(stored)


def fingerprint(stored: str) -> str:
    """Names a configured hash without keeping it: what an upgrade replaces."""
    return hashlib.sha256(stored.encode()).hexdigest()


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        found = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


@dataclass(frozen=True)
class AuthConfig:
    users: dict[str, str] = field(default_factory=dict)  # name -> configured hash
    token: str | None = None
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    secure_cookies: bool = True
    # name -> the argon2id hash that replaced an older configured one, as the console
    # stored it; consulted only while the configured hash is still that older one.
    upgrades: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _decoy()  # made with the console, so no sign-in takes longer for making it

    def stored_hash(self, user: str) -> str | None:
        configured = self.users.get(user)
        if configured is None:
            return None
        replaces, upgraded = self.upgrades.get(user, ("", ""))
        return upgraded if replaces == fingerprint(configured) else configured

    def upgrade(self, user: str, password: str) -> tuple[str, str] | None:
        """After a good sign-in: (fingerprint of the configured hash, a new argon2id hash)
        when the hash in use is outdated, else None. The caller stores it."""
        stored = self.stored_hash(user)
        if stored is None or not needs_upgrade(stored):
            return None
        upgraded = (fingerprint(self.users[user]), hash_password(password))
        self.upgrades[user] = upgraded
        return upgraded

    def __repr__(self) -> str:  # never show hashes, the token or the key
        return f"AuthConfig(users={sorted(self.users)}, token={'set' if self.token else 'unset'})"

    @property
    def open_to_nobody(self) -> bool:
        return not self.users and not self.token

    def check(self, user: str, password: str) -> str | None:
        """The signed-in name, or None. Takes about as long for unknown users."""
        stored = self.stored_hash(user)
        if stored is not None:
            return user if verify_password(password, stored) else None
        if self.token and user in ("", TOKEN_USER):
            return TOKEN_USER if hmac.compare_digest(password, self.token) else None
        verify_password(password, _decoy())  # same cost: no timing hint of who exists
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        env = load_environment(environ)
        users = parse_users(env.secret("review_users") or "")
        secret = env.secret("review_secret") or secrets.token_urlsafe(32)
        return cls(users, env.secret("review_token"), secret, env.review_cookie_secure)


def parse_users(text: str) -> dict[str, str]:
    users: dict[str, str] = {}
    at = 0
    text = text.strip()
    while at < len(text):
        found = _PAIR.match(text, at)
        if found is None or found.end() == at:
            raise ConfigurationError(
                "REVIEW_USERS must be name:hash pairs separated by commas, each hash an "
                "argon2id one (make it with: python -m consumers.review.auth NAME)"
            )
        users[found[1]] = found[2]
        at = found.end()
    return users


@functools.cache
def _decoy() -> str:
    # An argon2id hash costs 64 MiB and about 0.6 s of CPU over its four lanes: made
    # where sign-ins are checked, not on import, which every process of the application
    # (each service, each command that loads it) does.
    return hash_password("decoy")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m consumers.review.auth NAME  (asks for the password)")
    password = getpass.getpass(f"password for {sys.argv[1]}: ")
    if len(password) < 12:
        sys.exit("use at least 12 characters")
    print(f"{sys.argv[1]}:{hash_password(password)}")


if __name__ == "__main__":
    main()
