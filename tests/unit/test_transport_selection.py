"""Which broker the commands connect to: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else
RabbitMQ from AMQP_URL; an explicit --amqp-url wins over both."""

from __future__ import annotations

from agentbus.cli.common import broker_transport
from agentbus.settings import Settings
from agentbus.transport.kafka import KafkaTransport
from agentbus.transport.rabbitmq import RabbitTransport

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def test_kafka_bootstrap_servers_select_kafka_with_its_settings() -> None:
    config = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
            "AMQP_URL": AMQP,
            "AGENTBUS_KAFKA_PREFIX": "shop1.",
            "AGENTBUS_KAFKA_PARTITIONS": "12",
            "AGENTBUS_KAFKA_REPLICATION": "3",
            "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        }
    )
    transport = broker_transport(config, None, name="agentbus run all", event_types=["a.b"])
    assert isinstance(transport, KafkaTransport)
    assert (transport.prefix, transport.partitions, transport.replication) == ("shop1.", 12, 3)
    assert transport.session_timeout_ms == 6000
    assert transport.broker_info.system == "kafka"
    assert transport.broker_info.header_prefix == "ce_"
    assert transport.broker_info.retries == "in_place"


def test_kafka_defaults_are_six_partitions_one_replica_no_prefix() -> None:
    config = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"})
    assert (config.kafka_prefix, config.kafka_partitions, config.kafka_replication) == ("", 6, 1)
    assert config.kafka_session_timeout_ms == 10_000


def test_without_kafka_amqp_url_selects_rabbitmq_and_an_explicit_url_wins() -> None:
    assert isinstance(
        broker_transport(Settings.from_env({"AMQP_URL": AMQP}), None, name="x"), RabbitTransport
    )
    both = Settings.from_env({"AMQP_URL": AMQP, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"})
    assert isinstance(broker_transport(both, AMQP, name="x"), RabbitTransport)
