"""The one exception hierarchy of agentbus.

Every failure a handler or the platform raises is classified by kind, because the
kind decides what happens to the message: a permanent error is dead-lettered at
once, a transient one is retried with backoff until its attempts run out.
"""

from __future__ import annotations

import re
from enum import StrEnum


class AgentbusError(Exception):
    """Root of every error agentbus raises on purpose."""


class ConfigurationError(AgentbusError):
    """A setting is missing or wrong; raised before any work starts."""


class BrokerUnavailable(AgentbusError):
    """The broker could not be reached."""


class Unroutable(AgentbusError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class ProcessingError(AgentbusError):
    """Base for errors that tell the runtime what to do with the message."""

    code: str = "processing_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class PermanentError(ProcessingError):
    """Retrying cannot help (bad input, a broken rule): dead-letter at once."""

    code = "permanent"


class TransientError(ProcessingError):
    """Retrying may help (a dependency is down): retry with backoff."""

    code = "transient"


class Reason(StrEnum):
    """Reason codes for a message that cannot be read as an event of the catalog."""

    TOO_LARGE = "too_large"
    WRONG_CONTENT_TYPE = "wrong_content_type"
    INVALID_ENCODING = "invalid_encoding"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_ATTRIBUTE = "missing_attribute"
    INVALID_ATTRIBUTE = "invalid_attribute"
    UNSUPPORTED_SPECVERSION = "unsupported_specversion"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_DATA = "invalid_data"
    PROPERTY_MISMATCH = "property_mismatch"


class MalformedEvent(PermanentError):
    """The bytes are not a valid event; `code` is one of `Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, code=reason.value)
        self.reason = reason


_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^@/\s]+@", re.IGNORECASE)


def one_line(text: str, limit: int = 500) -> str:
    """An error text fit for a log line or a dead letter: one line, bounded, and with
    the credentials of any URL in it masked."""
    return _URL_CREDENTIALS.sub(r"\1***@", " ".join(text.split()))[:limit]
