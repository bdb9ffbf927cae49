"""`AMQP_URL` lists a cluster's nodes: full URLs, or bare host:port after the first."""

from __future__ import annotations

import inspect

import pytest
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_connection import RobustConnection

from agentbus.asyncapi import amqp_servers
from agentbus.errors import ConfigurationError
from agentbus.settings import Settings
from agentbus.transport.amqp_addresses import amqp_addresses
from agentbus.transport.rabbitmq import CONNECT_ONCE, RESTORE_LOCK, RESTORED, RabbitTransport
from tests.unit.test_cli_errors import agentbus, assert_one_line_error

NODE = "amqp://shop:s3cret@10.0.0.1:5672/prod?heartbeat=30"


def test_one_url_is_one_address() -> None:
    assert amqp_addresses("amqp://guest:guest@127.0.0.1:5672/") == [
        "amqp://guest:guest@127.0.0.1:5672/"
    ]


def test_full_urls_are_kept_as_given_in_their_order() -> None:
    value = " amqp://a:b@n1:5681/ , amqps://c:d@n2/v ,amqp://n3:5683"
    assert amqp_addresses(value) == ["amqp://a:b@n1:5681/", "amqps://c:d@n2/v", "amqp://n3:5683"]


def test_a_bare_address_takes_the_first_urls_credentials_vhost_and_query() -> None:
    assert amqp_addresses(f"{NODE},10.0.0.2:5673,node-3,[::1]:5674") == [
        NODE,
        "amqp://shop:s3cret@10.0.0.2:5673/prod?heartbeat=30",
        "amqp://shop:s3cret@node-3/prod?heartbeat=30",
        "amqp://shop:s3cret@[::1]:5674/prod?heartbeat=30",
    ]


def test_a_bare_address_without_credentials_in_the_first_url() -> None:
    assert amqp_addresses("amqp://n1:5681/,n2:5682") == ["amqp://n1:5681/", "amqp://n2:5682/"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "is empty"),
        ("10.0.0.1:5672,amqp://n2/", "must start with amqp://"),
        ("http://u:s3cret@n1/", "must start with amqp://"),
        (f"{NODE},,n3", "empty address at position 2"),
        (f"{NODE},", "empty address at position 2"),
        (f"{NODE},http://u:s3cret@n2/", "address 2 must start with amqp://"),
        (f"{NODE},n2:port", "neither a URL nor host:port"),
        (f"{NODE},n2:70000", "neither a URL nor host:port"),
        (f"{NODE},user@n2", "neither a URL nor host:port"),
        ("amqp://u:s3cret@n1:99999/", "cannot be read"),
        (f"{NODE},amqp:///vhost", "names no host"),
    ],
)
def test_bad_lists_are_one_line_without_the_password(value: str, needle: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        amqp_addresses(value)
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message
    assert "s3cret" not in message


def test_settings_and_the_transport_take_the_list() -> None:
    value = "amqp://guest:guest@127.0.0.1:5681/,127.0.0.1:5682,127.0.0.1:5683"
    assert Settings.from_env({"AMQP_URL": value}).amqp_url == value
    transport = RabbitTransport(value)
    # Before it connects, it names the first node.
    assert (transport.broker_info.address, transport.broker_info.port) == ("127.0.0.1", 5681)
    with pytest.raises(ConfigurationError, match="position 2"):
        Settings.from_env({"AMQP_URL": "amqp://n1/,,n2"})


def test_the_cli_refuses_a_bad_list_in_one_line() -> None:
    result = agentbus("dlq", "list", AMQP_URL="amqp://u:s3cret@n1/,n2:x")
    assert_one_line_error(result, "AMQP_URL", "host:port")
    assert "s3cret" not in result.stderr


def test_the_asyncapi_document_names_every_node() -> None:
    servers = amqp_servers("amqp://u:p@n1:5681/shop,n2:5682")
    assert [(s.name, s.host, s.vhost) for s in servers] == [
        ("rabbitmq", "n1:5681", "shop"),
        ("rabbitmq-2", "n2:5682", "shop"),
    ]


def test_the_robust_connection_still_has_the_attempt_the_failover_wraps() -> None:
    # A renamed attempt in a new aio-pika would leave every connection on its first node.
    assert callable(getattr(RobustConnection, CONNECT_ONCE, None))


def test_the_robust_channel_still_restores_cancelled_consumers_where_the_lean_one_hooks() -> None:
    # Renamed in a new aio-pika, the lean channel's version would never run and a consumer
    # the broker cancelled would be subscribed again with aio-pika's message objects.
    assert "_restore_missing_consumers" in inspect.getsource(RobustChannel._restore_consumers)
    init = inspect.getsource(RobustChannel.__init__)
    for private in (RESTORE_LOCK, RESTORED):
        assert f"self.__{private.split('__', 1)[1]} =" in init, private
