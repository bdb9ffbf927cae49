"""`deploy/dev/services` is idempotent: with every server up it starts nothing."""

from __future__ import annotations

import subprocess

from tests.support.servers import ROOT


def test_up_again_only_checks_and_says_each_server_is_up(
    amqp_url: str, database_url: str, kafka_bootstrap: str
) -> None:
    done = subprocess.run(
        [str(ROOT / "deploy/dev/services"), "up"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) == {"rabbitmq", "postgres", "kafka"}
    for name, line in lines.items():
        assert "already up on 127.0.0.1:" in line, line
        assert "started" not in line, f"{name}: {line}"
        assert "installed" not in line, f"{name}: {line}"


def test_status_names_each_server_and_what_runs_there(
    amqp_url: str, database_url: str, kafka_bootstrap: str
) -> None:
    done = subprocess.run(
        [str(ROOT / "deploy/dev/services"), "status"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RabbitMQ 3." in done.stdout
    assert "PostgreSQL " in done.stdout
    assert "Apache Kafka 4." in done.stdout


def test_an_unknown_server_is_refused_in_one_line() -> None:
    done = subprocess.run(
        [str(ROOT / "deploy/dev/services"), "up", "redis"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "unknown server 'redis'" in done.stderr
    assert "Traceback" not in done.stderr
