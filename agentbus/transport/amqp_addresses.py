"""`AMQP_URL` as a list of broker addresses: the nodes of a RabbitMQ cluster.

The value is one `amqp://` or `amqps://` URL, or several separated by commas:

    amqp://user:pass@10.0.0.1:5672/vhost,amqp://user:pass@10.0.0.2:5672/vhost

After the first full URL an entry may be a bare `host[:port]`: it takes the first URL's
scheme, credentials, virtual host and query, and the scheme's default port.

    amqp://user:pass@10.0.0.1:5672/vhost,10.0.0.2:5672,10.0.0.3

A comma inside a password is written `%2C`, as any reserved character of a URL is.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from agentbus.errors import ConfigurationError

_BARE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>[^:]*))?$")


def amqp_addresses(value: str, name: str = "AMQP_URL") -> list[str]:
    """Every address in `value`, as a full URL, in the order given; one-line errors that
    never show a password."""
    entries = [entry.strip() for entry in value.split(",")]
    if not entries[0]:
        raise ConfigurationError(f"{name} is empty: give amqp://user:pass@host:5672/")
    first = _full(entries[0], name, 1)
    addresses = [first]
    for position, entry in enumerate(entries[1:], start=2):
        if not entry:
            raise ConfigurationError(f"{name} has an empty address at position {position}")
        addresses.append(
            _full(entry, name, position) if "://" in entry else _beside(first, entry, name)
        )
    return addresses


def _full(url: str, name: str, position: int) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading it is what checks it
    except ValueError as exc:
        raise ConfigurationError(
            f"{name} address {position} cannot be read: {exc} ({masked(url)})"
        ) from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(
            f"{name} address {position} must start with amqp:// or amqps:// ({masked(url)})"
        )
    if position > 1 and not parts.hostname:
        raise ConfigurationError(f"{name} address {position} names no host ({masked(url)})")
    return url


def _beside(first: str, entry: str, name: str) -> str:
    """A bare host[:port] made a URL like the first one."""
    found = _BARE.match(entry)
    port = found.group("port") if found else None
    if found is None or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigurationError(
            f"{name} address {entry!r} is neither a URL nor host:port (e.g. 10.0.0.2:5672)"
        )
    parts = urlsplit(first)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{entry}" if credentials else entry
    return urlunsplit(parts._replace(netloc=netloc))


def masked(url: str) -> str:
    """A URL without its password, for messages."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*):[^@/\s]*@", r"\1:***@", url)
