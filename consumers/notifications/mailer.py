"""Sending email: SMTP when `SMTP_URL` is set, else files in a mail folder."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import aiosmtplib

from agentbus.errors import ConfigurationError, TransientError


@dataclass(frozen=True, slots=True)
class Email:
    key: str  # idempotency key: the event that asked for it
    to: str
    subject: str
    body: str

    def message(self, sender: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = self.to
        message["Subject"] = self.subject
        # A Message-ID derived from the key lets a receiving server drop a resend.
        message["Message-ID"] = f"<{self.key}@agentbus>"
        message.set_content(self.body)
        return message


class Mailer(Protocol):
    async def send(self, email: Email) -> None: ...


class SmtpMailer:
    """`smtp://user:password@host:port` (STARTTLS if offered) or `smtps://` (implicit TLS)."""

    def __init__(self, url: str, sender: str, *, timeout: float = 10.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ConfigurationError(
                "SMTP_URL must look like smtp://host:port or smtps://host:port"
            )
        self.host = parsed.hostname
        self.port = parsed.port or (465 if parsed.scheme == "smtps" else 25)
        self.tls = parsed.scheme == "smtps"
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.sender = sender
        self.timeout = timeout

    async def send(self, email: Email) -> None:
        try:
            await aiosmtplib.send(
                email.message(self.sender),
                hostname=self.host,
                port=self.port,
                use_tls=self.tls,
                start_tls=None if not self.tls else False,
                username=self.username,
                password=self.password,
                timeout=self.timeout,
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            # Never echo the URL: it may carry the password.
            raise TransientError(f"SMTP {self.host}:{self.port}: {type(exc).__name__}") from exc


class FolderMailer:
    """Writes each email as an .eml file: the embedded default, and easy to inspect."""

    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    async def send(self, email: Email) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{email.key}.eml"
        path.write_bytes(bytes(email.message(self.sender)))
