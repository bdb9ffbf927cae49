"""The application a deployment runs: its event catalog and its services.

The platform never imports the application. It finds it through the
`agentbus.apps` entry point group (or `AGENTBUS_APP=module:attribute`), so the
same platform serves any catalog and any set of services.

An application's demo and eval suite import the application (they run its
services), so the application cannot name them without an import cycle. They
register under its name in the entry point groups `agentbus.demos` and
`agentbus.evals` instead; an `Application` built by hand may still carry its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from agentbus.environment import Environment, load_environment
from agentbus.errors import ConfigurationError
from agentbus.service import Service
from agentbus.settings import Settings

ServiceFactory = Callable[[], Service]


@dataclass(frozen=True)
class DemoOptions:
    """What `agentbus demo` passes to the application's demo."""

    amqp_url: str | None
    settings: Settings
    as_json: bool = False
    # Record spans in memory and show the trace of one suggestion at the end.
    trace: bool = False


DemoRunner = Callable[[DemoOptions], Awaitable[int]]


@dataclass(frozen=True)
class EvalOptions:
    """What `agentbus eval` passes to the application's eval suite (its options, with
    the command's defaults): the suite takes this as its request, not a copy of it."""

    # Recordings or folders of them; none: the suite's own fixtures.
    paths: Sequence[Path] = ()
    model: str = "policy"
    record: Path | None = None
    repeat: int = 1
    out: Path = Path("eval-report")
    baseline: Path | None = None
    tolerance: float = 0.10
    contenders: Sequence[str] = ()
    as_json: bool = False
    junit: Path | None = None
    # Processes replaying at once (0: one per core); 1 replays in this process, where a
    # caller's patches and tracer apply.
    jobs: int = 1


EvalRunner = Callable[[EvalOptions], Awaitable[int]]


@dataclass(frozen=True)
class StateView:
    """A read of one service's database for `agentbus state NAME`."""

    service: str
    read: Callable[[sa.Connection], Any]
    description: str = ""


@dataclass(frozen=True)
class Application:
    name: str
    catalog: Mapping[str, type[BaseModel]]
    services: Mapping[str, ServiceFactory] = field(default_factory=dict)
    demo: DemoRunner | None = None
    evaluate: EvalRunner | None = None
    states: Mapping[str, StateView] = field(default_factory=dict)
    # Where `agentbus suggestions` reads from: one view per agent.
    suggestions: tuple[StateView, ...] = ()

    def service(self, name: str) -> Service:
        factory = self.services.get(name)
        if factory is None:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigurationError(f"unknown service {name!r} (known: {known})")
        return factory()

    def resolve(self, names: list[str]) -> list[Service]:
        """Services by name; `all` expands to every registered one."""
        wanted = list(self.services) if "all" in names else list(dict.fromkeys(names))
        return [self.service(name) for name in wanted]


def load_application(env: Environment | None = None) -> Application:
    target = (env if env is not None else load_environment()).app
    if target:
        return _import(target)
    found = list(entry_points(group="agentbus.apps"))
    if not found:
        raise ConfigurationError("no application installed (entry point group agentbus.apps)")
    if len(found) > 1:
        names = ", ".join(ep.name for ep in found)
        raise ConfigurationError(f"several applications installed ({names}): set AGENTBUS_APP")
    loaded = found[0].load()
    if not isinstance(loaded, Application):
        raise ConfigurationError(f"entry point {found[0].value} is not an Application")
    return loaded


DEMOS = "agentbus.demos"
EVAL_SUITES = "agentbus.evals"


def demo_of(app: Application) -> DemoRunner | None:
    """The application's demo: its own, else the one registered under its name."""
    return app.demo or _registered(DEMOS, app.name)


def eval_suite_of(app: Application) -> EvalRunner | None:
    """The application's eval suite: its own, else the one registered under its name."""
    return app.evaluate or _registered(EVAL_SUITES, app.name)


def _registered(group: str, name: str) -> Any:
    found = list(entry_points(group=group, name=name))
    if len(found) > 1:
        where = ", ".join(ep.value for ep in found)
        raise ConfigurationError(f"several {group} entry points named {name!r}: {where}")
    if not found:
        return None
    loaded = found[0].load()
    if not callable(loaded):
        raise ConfigurationError(f"entry point {found[0].value} ({group}) is not callable")
    return loaded


def _import(target: str) -> Application:
    module_name, _, attribute = target.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"AGENTBUS_APP={target!r} cannot be loaded: {exc}") from None
    if not isinstance(loaded, Application):
        raise ConfigurationError(f"AGENTBUS_APP={target!r} is not an Application")
    return loaded
