"""The development and CI servers: RabbitMQ, PostgreSQL and a single-node Apache Kafka.

`up` makes each one answer, installing or fetching it first when the machine lacks it, and
does nothing but check what already answers. `down` stops what `up` started, and `status`
says what answers. One line per server, with what was done and how long it took.

Only the standard library: this runs before the project's environment exists.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOME = Path(os.environ.get("AGENTBUS_SERVICES_HOME", Path.home() / ".cache/agentbus/services"))
STARTED = HOME / "started.json"
LOOPBACK = "127.0.0.1"


class ServiceError(Exception):
    """A server could not be brought up or stopped; the message says why in one line."""


# -- small tools ---------------------------------------------------------------------------


def answers(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def as_root(command: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return list(command)
    if shutil.which("sudo"):
        return ["sudo", "-n", *command]
    raise ServiceError(f"`{' '.join(command)}` needs root, and there is no sudo")


# Servers outlive the command, and the folder it was run from may not outlive them: a
# RabbitMQ node started from a CI clone that was deleted later failed `stop_app` (reading
# its plugins) and its epmd checks. Servers and the tools that start them run from here.
SERVER_CWD = "/"


def run(
    command: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=SERVER_CWD,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"{command[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"`{' '.join(command)}` took over {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise ServiceError(f"`{' '.join(command)}` failed ({done.returncode}): {lines[-1]}")
    return done


def wait_until(ready: Callable[[], bool], seconds: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(every)


_apt = threading.Lock()
_apt_updated = False


def apt_install(*packages: str) -> None:
    """Installs Debian packages; one apt at a time (dpkg has one lock), the index updated once."""
    global _apt_updated
    with _apt:
        if not _apt_updated:
            run(as_root(["apt-get", "update", "-qq"]), timeout=300, check=False)
            _apt_updated = True
        run(
            as_root(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]),
            timeout=900,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )


class Steps:
    """What one server's `up` did, with the time each step took."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self._began = time.monotonic()

    def timed(self, label: str, action: Callable[[], object]) -> None:
        began = time.monotonic()
        action()
        self.done.append(f"{label} ({time.monotonic() - began:.1f} s)")

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._began


def remember_started(name: str, started: bool) -> None:
    with _apt:  # the same lock keeps two threads from writing the file at once
        known = json.loads(STARTED.read_text()) if STARTED.exists() else {}
        if started:
            known[name] = True
        else:
            known.pop(name, None)
        STARTED.parent.mkdir(parents=True, exist_ok=True)
        STARTED.write_text(json.dumps(known))


def started_here() -> set[str]:
    return set(json.loads(STARTED.read_text())) if STARTED.exists() else set()


# -- the servers -----------------------------------------------------------------------------


class Server:
    name = ""
    port = 0

    def where(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def is_up(self) -> bool:
        raise NotImplementedError

    def up(self, steps: Steps) -> None:
        """Makes the server answer; called only when `is_up` said no."""
        raise NotImplementedError

    def settle(self, steps: Steps) -> None:
        """What an up server may still lack (a plugin, a database), put right."""

    def down(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return ""


class RabbitMQ(Server):
    name = "rabbitmq"
    port = 5672
    # The same plugins as the compose file's broker.
    plugins_file = ROOT / "deploy/rabbitmq-enabled-plugins"

    def plugins(self) -> list[str]:
        return re.findall(r"[a-z_]+", self.plugins_file.read_text())

    def installed(self) -> bool:
        return (
            shutil.which("rabbitmq-server") is not None
            or Path("/usr/sbin/rabbitmq-server").exists()
        )

    def booted(self) -> bool:
        return run(["rabbitmq-diagnostics", "-q", "check_running"], check=False).returncode == 0

    def is_up(self) -> bool:
        if not answers(self.port):
            return False
        # A broker answers on its port before it has booted; a local one is asked.
        return not self.installed() or self.booted()

    def up(self, steps: Steps) -> None:
        if not self.installed():
            steps.timed("installed", lambda: apt_install("rabbitmq-server"))
        # Enabled offline, the plugins load as the node boots: no second start.
        run(as_root(["rabbitmq-plugins", "enable", "--offline", *self.plugins()]))

        def start() -> None:
            run(as_root(["rabbitmq-server", "-detached"]))
            wait_until(lambda: answers(self.port) and self.booted(), 180, "RabbitMQ booting")

        steps.timed("started", start)
        remember_started(self.name, True)

    def settle(self, steps: Steps) -> None:
        if not self.installed():
            return  # someone else's broker (a container, another host): not ours to change
        wanted = self.plugins()
        check = run(["rabbitmq-plugins", "-q", "is_enabled", *wanted], check=False)
        if check.returncode != 0:
            steps.timed(
                "plugins enabled", lambda: run(as_root(["rabbitmq-plugins", "enable", *wanted]))
            )

    def down(self) -> None:
        run(as_root(["rabbitmqctl", "shutdown"]), timeout=120)

    def describe(self) -> str:
        if not self.installed():
            return "not installed here"
        version = run(["rabbitmqctl", "-q", "version"], check=False).stdout.strip()
        return f"RabbitMQ {version}, plugins: {', '.join(self.plugins())}"


class PostgreSQL(Server):
    name = "postgres"
    port = 5432
    # The databases the tests and the README's examples connect to.
    databases = ("test", "shop")
    hba_marker = "# agentbus development: trust connections from this machine"

    def installed(self) -> bool:
        return shutil.which("pg_ctlcluster") is not None and any(
            Path("/usr/lib/postgresql").glob("*/bin/postgres")
        )

    def psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return run(
            [
                *("psql", "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres"),
                *("-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql),
            ],
            check=False,
            timeout=30,
        )

    def trusted(self) -> bool:
        return self.psql("select 1").stdout.strip() == "1"

    def is_up(self) -> bool:
        return answers(self.port) and self.trusted()

    def cluster(self) -> tuple[str, str, str]:
        """The cluster on our port as (version, name, status), made when there is none."""
        listed = run(["pg_lsclusters", "--no-header"]).stdout.splitlines()
        for line in listed:
            version, name, port, status = line.split()[:4]
            if port == str(self.port):
                return version, name, status
        versions = sorted(
            (p.parent.parent.name for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")),
            key=lambda v: int(v.split(".")[0]),
        )
        run(as_root(["pg_createcluster", versions[-1], "main", "--port", str(self.port)]))
        return versions[-1], "main", "down"

    def configure(self, version: str, name: str) -> None:
        """Loopback only, and trust for local connections: a development server, never a
        shared one."""
        folder = Path("/etc/postgresql") / version / name
        (folder / "conf.d").mkdir(exist_ok=True)
        (folder / "conf.d/agentbus.conf").write_text(
            f"listen_addresses = '{LOOPBACK}'\nport = {self.port}\n"
            # chaos and scale-out tests run every service as its own process, each with a pool
            "max_connections = 300\n"
        )
        hba = folder / "pg_hba.conf"
        text = hba.read_text()
        if self.hba_marker not in text:
            trust = (
                f"{self.hba_marker}\n"
                "local   all   all                  trust\n"
                "host    all   all   127.0.0.1/32   trust\n"
                "host    all   all   ::1/128        trust\n\n"
            )
            hba.write_text(trust + text)

    def up(self, steps: Steps) -> None:
        if not self.installed():
            steps.timed("installed", lambda: apt_install("postgresql"))
        version, name, status = self.cluster()
        self.configure(version, name)
        action = "reload" if status == "online" else "start"

        def started() -> None:
            run(as_root(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action]))
            wait_until(lambda: answers(self.port) and self.trusted(), 60, "PostgreSQL starting")

        steps.timed("started" if action == "start" else "trust set", started)
        if action == "start":
            remember_started(self.name, True)

    def settle(self, steps: Steps) -> None:
        existing = set(self.psql("select datname from pg_database").stdout.split())
        missing = [d for d in self.databases if d not in existing]
        for database in missing:
            made = self.psql(f'create database "{database}"')
            if made.returncode != 0:
                raise ServiceError(f"could not create database {database}: {made.stderr.strip()}")
        if missing:
            steps.done.append(f"created databases {', '.join(missing)}")

    def down(self) -> None:
        version, name, _ = self.cluster()
        run(as_root(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop"]))

    def describe(self) -> str:
        version = self.psql("show server_version").stdout.strip()
        return f"PostgreSQL {version}, databases: {', '.join(self.databases)}"


class Kafka(Server):
    """Apache Kafka in KRaft mode, one node, from Maven Central's jars (no distribution
    tarball is reachable from the project's machines). The version is pinned in
    kafka/pom.xml."""

    name = "kafka"
    port = 9092
    controller_port = 9093
    pom = HERE / "kafka/pom.xml"
    template = HERE / "kafka/server.properties"

    @property
    def version(self) -> str:
        found = re.search(r"<kafka.version>([^<]+)</kafka.version>", self.pom.read_text())
        if not found:
            raise ServiceError(f"{self.pom} does not pin kafka.version")
        return found.group(1)

    @property
    def folder(self) -> Path:
        return HOME / "kafka" / self.version

    def is_up(self) -> bool:
        return answers(self.port) and kafka_brokers(LOOPBACK, self.port) > 0

    def fetch(self) -> None:
        if not shutil.which("java"):
            apt_install("openjdk-17-jre-headless")
        if not shutil.which("mvn"):
            apt_install("maven")
        lib = self.folder / "lib"
        partial = self.folder / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        run(
            [
                *("mvn", "-q", "-B", "-f", str(self.pom), "dependency:copy-dependencies"),
                *(f"-DoutputDirectory={partial}", "-DincludeScope=runtime"),
            ],
            timeout=900,
        )
        partial.rename(lib)

    def up(self, steps: Steps) -> None:
        if not (self.folder / "lib").is_dir():
            steps.timed(f"fetched {self.version}", self.fetch)
        properties = self.folder / "server.properties"
        data = self.folder / "data"
        properties.write_text(
            self.template.read_text().format(
                port=self.port, controller_port=self.controller_port, data=data
            )
        )
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            steps.timed(
                "formatted",
                lambda: self.java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(properties),
                ),
            )

        def start() -> None:
            log = (self.folder / "kafka.log").open("ab")
            process = subprocess.Popen(
                [
                    # A small heap: a test broker holds little, and the machine has 2 cores.
                    *("java", "-Xms256m", "-Xmx512m", "-XX:+UseSerialGC"),
                    *("-Djava.awt.headless=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"),
                    *("-cp", str(self.folder / "lib/*"), "kafka.Kafka", str(properties)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=SERVER_CWD,
                start_new_session=True,  # outlives this command, and a Ctrl-C in its terminal
            )
            (self.folder / "kafka.pid").write_text(str(process.pid))

            def ready() -> bool:
                if process.poll() is not None:
                    tail = (self.folder / "kafka.log").read_text(errors="replace").splitlines()
                    raise ServiceError(
                        f"the broker exited ({process.returncode}): "
                        f"{tail[-1] if tail else 'no output'}; log: {self.folder / 'kafka.log'}"
                    )
                return self.is_up()

            wait_until(ready, 120, "Kafka taking a metadata request")

        steps.timed("started", start)
        remember_started(self.name, True)

    def java(self, main: str, *args: str) -> None:
        run(["java", "-cp", str(self.folder / "lib/*"), main, *args], timeout=120)

    def down(self) -> None:
        pid_file = self.folder / "kafka.pid"
        if not pid_file.exists():
            raise ServiceError(f"no {pid_file}: this broker was not started here")
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink()

    def describe(self) -> str:
        return f"Apache Kafka {self.version} (KRaft, one node), data in {self.folder / 'data'}"


def kafka_brokers(host: str, port: int, timeout: float = 3.0) -> int:
    """How many brokers a Metadata request (v4, the oldest Kafka 4 takes) lists; 0 when the
    broker does not answer it. Written out here so that checking needs no Kafka client."""
    client = b"agentbus-services"
    request = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((host, port), timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _read(connection, 4))[0]
            response = _read(connection, size)
    except (OSError, struct.error):
        return 0
    correlation, _throttle, brokers = struct.unpack_from(">iii", response)
    return brokers if correlation == 1 else 0


def _read(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return bytes(chunks)


SERVERS: dict[str, Server] = {s.name: s for s in (RabbitMQ(), PostgreSQL(), Kafka())}


# -- a three-node RabbitMQ cluster -------------------------------------------------------------

CLUSTER_HOME = Path(
    os.environ.get("AGENTBUS_RABBITMQ_CLUSTER_HOME", "/tmp/agentbus-rabbitmq-cluster")
)
# The Debian package's own scripts, not its wrappers in /usr/sbin: those send the server's
# output to the single broker's log files.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Lean nodes: one scheduler each (the machine has two cores and other work), and only the
# plugin partitioned queues need, so that no management or metrics port collides with the
# single broker's.
CLUSTER_PLUGINS = "[rabbitmq_consistent_hash_exchange].\n"
CLUSTER_CONFIG = (
    "# agentbus development cluster (deploy/dev/services cluster up)\n"
    "# Quorum queue leaders spread over the nodes, not all on the declaring client's node.\n"
    "queue_leader_locator = balanced\n"
    "log.console = false\n"
    "log.file.level = warning\n"
)


class ClusterNode:
    """One node of the development cluster: agentbus-cN@localhost on AMQP port 5680+N, its
    Erlang distribution on 25680+N, its files under CLUSTER_HOME/cN. The nodes run as the
    rabbitmq user, with its Erlang cookie, so that `rabbitmqctl -n NODE` reaches them as it
    reaches the single broker."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"agentbus-c{number}@localhost"
        self.port = 5680 + number
        self.dist_port = 25680 + number
        self.folder = CLUSTER_HOME / f"c{number}"
        self.pid_file = self.folder / "beam.pid"

    def env(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(CLUSTER_HOME / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(CLUSTER_HOME / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(CLUSTER_HOME / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(CLUSTER_HOME / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1",
        }

    def as_rabbitmq(self, command: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        settings = [f"{k}={v}" for k, v in (env or {}).items()]
        return as_root(["runuser", "-u", "rabbitmq", "--", "env", *settings, *command])

    def ctl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        command = [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args]
        return run(self.as_rabbitmq(command), timeout=timeout, check=check).stdout

    def booted(self) -> bool:
        if not answers(self.port):
            return False
        check = [str(RABBITMQ_BIN / "rabbitmq-diagnostics"), "-n", self.name, "-q", "check_running"]
        return run(self.as_rabbitmq(check), check=False).returncode == 0

    def members(self) -> set[str]:
        """The nodes this node counts as its cluster (running or not)."""
        status = json.loads(self.ctl("-q", "cluster_status", "--formatter", "json"))
        return set(status["disk_nodes"]) | set(status["ram_nodes"])

    def running_members(self) -> set[str]:
        status = json.loads(self.ctl("-q", "cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def start(self) -> None:
        for folder in (self.folder / "mnesia", self.folder / "log"):
            run(self.as_rabbitmq(["mkdir", "-p", str(folder)]))
        run(
            self.as_rabbitmq([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], self.env()),
            timeout=60,
        )
        wait_until(self.booted, 180, f"{self.name} booting")

    def join(self, seed: ClusterNode) -> None:
        self.ctl("stop_app")
        self.ctl("join_cluster", seed.name)
        self.ctl("start_app")

    def stop(self) -> None:
        self.ctl("stop", timeout=120)

    def beam_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


CLUSTER = tuple(ClusterNode(n) for n in (1, 2, 3))


def prepare_cluster_home() -> None:
    """The files every node shares, owned by the rabbitmq user."""
    run(as_root(["mkdir", "-p", str(CLUSTER_HOME)]))
    files = {
        "enabled_plugins": CLUSTER_PLUGINS,
        "rabbitmq.conf": CLUSTER_CONFIG,
        "advanced.config": "[].\n",
        "rabbitmq-env.conf": "",
    }
    for name, text in files.items():
        path = CLUSTER_HOME / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    run(as_root(["chown", "-R", "rabbitmq:rabbitmq", str(CLUSTER_HOME)]))


def cluster_node_up(node: ClusterNode, results: dict[str, tuple[bool, Steps, bool]]) -> None:
    steps = Steps()
    try:
        was_up = node.booted()
        if not was_up:
            steps.timed("started", node.start)
        results[node.name] = (True, steps, was_up)
    except ServiceError as exc:
        say(node.name, f"FAILED after {steps.seconds:.1f} s: {exc}")
        results[node.name] = (False, steps, False)


def command_cluster_up() -> int:
    if not RabbitMQ().installed():
        say("cluster", "FAILED: rabbitmq-server is not installed (deploy/dev/services up rabbitmq)")
        return 1
    try:
        prepare_cluster_home()
    except ServiceError as exc:
        say("cluster", f"FAILED: {exc}")
        return 1
    # Booting is the slow part; the nodes boot side by side, then join one at a time.
    results: dict[str, tuple[bool, Steps, bool]] = {}
    threads = [threading.Thread(target=cluster_node_up, args=(n, results)) for n in CLUSTER]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seed = CLUSTER[0]
    failed = False
    for node in CLUSTER:
        ok, steps, _ = results[node.name]
        try:
            if ok and node is not seed and seed.name not in node.members():
                steps.timed(f"joined {seed.name}", functools.partial(node.join, seed))
        except ServiceError as exc:
            say(node.name, f"FAILED after {steps.seconds:.1f} s: {exc}")
            results[node.name] = (False, steps, False)
    for node in CLUSTER:
        ok, steps, was_up = results[node.name]
        if not ok:
            failed = True
            continue
        try:
            size = len(node.running_members())
        except ServiceError as exc:
            say(node.name, f"FAILED after {steps.seconds:.1f} s: {exc}")
            failed = True
            continue
        where = f"{LOOPBACK}:{node.port}"
        if was_up and not steps.done:
            checked = f"checked in {steps.seconds:.1f} s"
            say(node.name, f"already up on {where} ({checked}), {size} of 3 nodes running")
        else:
            did = ", ".join(steps.done)
            say(node.name, f"up on {where} in {steps.seconds:.1f} s: {did}; {size} of 3 running")
    return 1 if failed else 0


def command_cluster_down() -> int:
    failed = False
    for node in reversed(CLUSTER):
        began = time.monotonic()
        try:
            node.stop()
        except ServiceError as exc:
            if not answers(node.port):  # nothing to stop: the node was not running
                say(node.name, "down already")
                continue
            say(node.name, f"FAILED to stop: {exc}")
            failed = True
            continue
        say(node.name, f"stopped in {time.monotonic() - began:.1f} s")
    return 1 if failed else 0


def command_cluster_status() -> int:
    all_up = True
    for node in CLUSTER:
        if node.booted():
            running = ", ".join(sorted(node.running_members()))
            say(
                node.name,
                f"up on {LOOPBACK}:{node.port} (pid {node.beam_pid()}), running: {running}",
            )
        else:
            all_up = False
            say(node.name, f"down (nothing booted answers on {LOOPBACK}:{node.port})")
    return 0 if all_up else 1


# -- the commands ---------------------------------------------------------------------------

_print = threading.Lock()


def say(name: str, text: str) -> None:
    with _print:
        print(f"{name:<9} {text}", flush=True)


def bring_up(server: Server) -> bool:
    steps = Steps()
    try:
        if server.is_up():
            server.settle(steps)
            did = f": {', '.join(steps.done)}" if steps.done else ""
            checked = f"checked in {steps.seconds:.1f} s"
            say(server.name, f"already up on {server.where()} ({checked}){did}")
        else:
            server.up(steps)
            server.settle(steps)
            say(
                server.name,
                f"up on {server.where()} in {steps.seconds:.1f} s: {', '.join(steps.done)}",
            )
    except ServiceError as exc:
        say(server.name, f"FAILED after {steps.seconds:.1f} s: {exc}")
        return False
    return True


def command_up(names: list[str]) -> int:
    # Kafka needs no apt and no root: it comes up beside the other two, which share apt's lock.
    results: dict[str, bool] = {}

    def worker(group: list[str]) -> None:
        for name in group:
            results[name] = bring_up(SERVERS[name])

    groups = [[n for n in names if n != "kafka"], [n for n in names if n == "kafka"]]
    threads = [threading.Thread(target=worker, args=(g,)) for g in groups if g]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0 if all(results.values()) else 1


def command_down(names: list[str]) -> int:
    ours = started_here()
    failed = False
    for name in names:
        server = SERVERS[name]
        if name not in ours:
            say(name, "left alone: not started by this command")
            continue
        began = time.monotonic()
        try:
            server.down()
        except ServiceError as exc:
            say(name, f"FAILED to stop: {exc}")
            failed = True
            continue
        remember_started(name, False)
        say(name, f"stopped in {time.monotonic() - began:.1f} s")
    return 1 if failed else 0


def command_status(names: list[str]) -> int:
    ours = started_here()
    all_up = True
    for name in names:
        server = SERVERS[name]
        if server.is_up():
            origin = "started by this command" if name in ours else "not started by this command"
            say(name, f"up on {server.where()}: {server.describe()} ({origin})")
        else:
            all_up = False
            say(name, f"down (nothing answers on {server.where()})")
    return 0 if all_up else 1


def cluster_command(parser: argparse.ArgumentParser, words: list[str]) -> int:
    """`cluster up|down|status`: the three-node RabbitMQ cluster beside the single broker."""
    actions = {"up": command_cluster_up, "down": command_cluster_down}
    actions["status"] = command_cluster_status
    if len(words) != 1 or words[0] not in actions:
        parser.error("cluster takes one of: up, down, status")
    try:
        return actions[words[0]]()
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/dev/services",
        description="RabbitMQ, PostgreSQL and Kafka for development and CI, on this machine.",
    )
    parser.add_argument("command", choices=("up", "down", "status", "cluster"))
    parser.add_argument(
        "servers",
        nargs="*",
        metavar="SERVER",
        help=f"any of {', '.join(SERVERS)} (default: all); after `cluster`: up, down or status",
    )
    args = parser.parse_args(argv)
    if args.command == "cluster":
        return cluster_command(parser, args.servers)
    unknown = [n for n in args.servers if n not in SERVERS]
    if unknown:
        parser.error(f"unknown server {unknown[0]!r}: choose from {', '.join(SERVERS)}")
    names = args.servers or list(SERVERS)
    commands = {"up": command_up, "down": command_down, "status": command_status}
    try:
        return commands[args.command](names)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
