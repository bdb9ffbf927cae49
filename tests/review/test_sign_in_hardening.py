"""Passwords hashed with argon2id, older scrypt hashes upgraded on sign-in, and
sign-in throttled per account and per address (429 with Retry-After).

The HTTP tests run the real console service on the in-process broker with SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentbus.errors import ConfigurationError
from consumers.review import ReviewConsole, readmodel
from consumers.review.auth import AuthConfig, hash_password, parse_users, verify_password
from consumers.review.throttle import SignInThrottle
from tests.agents.harness import Shop
from tests.review.test_console import Browserless, base

PASSWORD = "correct horse battery"


def scrypt_hash(password: str) -> str:
    """A hash as the console made them before argon2id (n=2^14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${2**14}$8$1${b64(salt).decode()}${b64(digest).decode()}"


def test_new_hashes_are_argon2id_and_verify_only_their_password() -> None:
    made = hash_password(PASSWORD)
    assert made.startswith("$argon2id$")
    assert verify_password(PASSWORD, made)
    assert not verify_password(PASSWORD + "!", made)
    assert not verify_password(PASSWORD, "$argon2id$not-a-hash")


def test_review_users_reads_argon2_hashes_whose_parameters_hold_commas() -> None:
    ana, ben = hash_password("a" * 12), scrypt_hash("b" * 12)
    assert parse_users(f"ana:{ana}, ben:{ben}") == {"ana": ana, "ben": ben}
    for broken in (f"ana{ana}", f"ana:{ana},,ben:{ben}", "ana:plaintext-password"):
        with pytest.raises(ConfigurationError, match="REVIEW_USERS"):
            parse_users(broken)


def test_an_scrypt_hash_still_verifies_and_is_replaced_after_a_good_sign_in() -> None:
    old = scrypt_hash(PASSWORD)
    auth = AuthConfig(users={"ana": old})
    assert auth.check("ana", "wrong") is None
    assert auth.upgrade("ana", PASSWORD) is not None  # a good sign-in asks for it
    assert auth.stored_hash("ana") != old
    assert str(auth.stored_hash("ana")).startswith("$argon2id$")
    assert auth.check("ana", PASSWORD) == "ana"
    assert auth.upgrade("ana", PASSWORD) is None, "nothing left to upgrade"
    # A new configured hash (a password changed by the operator) wins over the upgrade.
    changed = AuthConfig(users={"ana": hash_password("another long one")}, upgrades=auth.upgrades)
    assert changed.check("ana", PASSWORD) is None
    assert changed.check("ana", "another long one") == "ana"


def test_the_throttle_counts_per_account_and_per_address_within_a_window() -> None:
    now = [0.0]
    throttle = SignInThrottle(per_account=3, per_address=5, window_s=60, clock=lambda: now[0])
    for n in range(3):
        assert throttle.retry_after("ana", f"10.0.0.{n}") is None
        throttle.failed("ana", f"10.0.0.{n}")
    wait = throttle.retry_after("ANA", "10.0.0.9")  # names are not case-sensitive here
    assert wait == 60
    assert throttle.retry_after("ben", "10.0.0.9") is None, "other accounts go on"
    now[0] = 30.0
    assert throttle.retry_after("ana", "10.0.0.9") == 30
    now[0] = 61.0
    assert throttle.retry_after("ana", "10.0.0.9") is None, "the window passed"
    for account in ("b", "c", "d", "e", "f"):
        throttle.failed(account, "10.9.9.9")
    assert throttle.retry_after("g", "10.9.9.9") is not None, "one address, many accounts"
    throttle.succeeded("b")
    assert throttle.retry_after("b", "10.1.1.1") is None


@pytest.fixture
async def legacy_console(tmp_path: Path) -> AsyncIterator[tuple[ReviewConsole, Path]]:
    auth = AuthConfig(users={"ana": scrypt_hash(PASSWORD)}, secret="k", secure_cookies=False)
    review = ReviewConsole(auth, port=0)
    async with Shop(tmp_path, [review.service]):
        yield review, tmp_path


async def test_sign_in_is_throttled_with_retry_after_and_audited(
    legacy_console: tuple[ReviewConsole, Path],
) -> None:
    review, _ = legacy_console
    guesser = Browserless(base(review))
    for _ in range(10):
        assert (await guesser.sign_in("ana", "a wrong guess")).status_code == 401
    assert (await guesser.sign_in("ana", "an 11th guess")).status_code == 429
    refused = await guesser.sign_in("ana", PASSWORD)  # even the right one, for now
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 900
    assert "Too many failed sign-ins" in refused.text
    await guesser.client.aclose()


async def test_a_good_sign_in_upgrades_the_stored_hash_and_keeps_it(
    legacy_console: tuple[ReviewConsole, Path],
) -> None:
    review, _ = legacy_console
    user = Browserless(base(review))
    signed = await user.sign_in("ana", PASSWORD)
    assert signed.status_code == 303
    await user.client.aclose()
    assert review.console is not None
    kept = await review.console.database().run(
        lambda tx: readmodel.password_upgrades_of(tx.connection)
    )
    replaces, new_hash = kept["ana"]
    assert new_hash.startswith("$argon2id$")
    assert verify_password(PASSWORD, new_hash)
    assert replaces == hashlib.sha256(review.console.auth.users["ana"].encode()).hexdigest()
