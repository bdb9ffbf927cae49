"""Who may review: users with scrypt password hashes, or one shared token, from config.

`REVIEW_USERS` lists `name:hash` pairs separated by commas (hashes from
`python -m consumers.review.auth NAME`, which asks for the password);
`REVIEW_TOKEN` lets anyone holding it in (as user `token`). Sessions are signed
cookies keyed by `REVIEW_SECRET`; without it a random key is drawn, so sessions
end when the process does. Nothing here ever logs a password, hash or token.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass, field

from agentbus.errors import ConfigurationError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
TOKEN_USER = "token"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    encode = base64.urlsafe_b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
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
    users: dict[str, str] = field(default_factory=dict)  # name -> scrypt hash
    token: str | None = None
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    secure_cookies: bool = True

    def __repr__(self) -> str:  # never show hashes, the token or the key
        return f"AuthConfig(users={sorted(self.users)}, token={'set' if self.token else 'unset'})"

    @property
    def open_to_nobody(self) -> bool:
        return not self.users and not self.token

    def check(self, user: str, password: str) -> str | None:
        """The signed-in name, or None. Takes about as long for unknown users."""
        stored = self.users.get(user)
        if stored is not None:
            return user if verify_password(password, stored) else None
        if self.token and user in ("", TOKEN_USER):
            return TOKEN_USER if hmac.compare_digest(password, self.token) else None
        verify_password(password, _DECOY)  # same cost: no timing hint of who exists
        return None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AuthConfig:
        env = dict(os.environ if environ is None else environ)
        users: dict[str, str] = {}
        for entry in filter(None, (e.strip() for e in env.get("REVIEW_USERS", "").split(","))):
            name, sep, stored = entry.partition(":")
            if not sep or not name or not stored.startswith("scrypt$"):
                raise ConfigurationError(
                    "REVIEW_USERS must be name:scrypt$... pairs separated by commas "
                    "(make a hash with: python -m consumers.review.auth NAME)"
                )
            users[name] = stored
        secret = env.get("REVIEW_SECRET") or secrets.token_urlsafe(32)
        secure = env.get("REVIEW_COOKIE_SECURE", "true").strip().lower() != "false"
        return cls(users, env.get("REVIEW_TOKEN") or None, secret, secure)


_DECOY = hash_password("decoy", salt=b"agentbus-review!")


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
