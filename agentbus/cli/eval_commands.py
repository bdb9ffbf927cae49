"""`eval`: replay recordings through the services and agents, score, report, gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentbus.app import EvalOptions, eval_suite_of
from agentbus.cli.common import application, fail, run_async
from agentbus.errors import ConfigurationError
from agentbus.host import tune_gc_once


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Recordings (JSONL) or folders of them; default: the app's fixtures."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="policy (offline), cassette:PATH (strict replay) or openai.")
    ] = "policy",
    record: Annotated[
        Path | None, typer.Option(help="With --model openai: write the answers to a cassette.")
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Runs per case for a non-deterministic model (pass^k).")
    ] = 1,
    out: Annotated[Path, typer.Option(help="Folder for report.html and results.json.")] = Path(
        "eval-report"
    ),
    baseline: Annotated[
        Path | None,
        typer.Option(help="A results.json to compare with: exit 1 when a score regresses."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="How much worse a cost may get before it regresses.")
    ] = 0.10,
    contender: Annotated[
        list[str] | None, typer.Option(help="Only these policies (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout.")] = False,
    junit: Annotated[
        Path | None, typer.Option(help="Also write JUnit XML here, for CI systems.")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Replays at once, each in a process of its own (0: one per core); "
            "a live model replays in this process.",
        ),
    ] = 0,
) -> None:
    """Replay recorded event streams offline, score what the agents publish, write a report."""
    app = application()
    try:
        runner = eval_suite_of(app)
    except ConfigurationError as exc:
        fail(str(exc))
    if runner is None:
        fail(f"the application {app.name!r} has no eval suite")
    options = EvalOptions(
        paths=tuple(paths or ()),
        model=model,
        record=record,
        repeat=repeat,
        out=out,
        baseline=baseline,
        tolerance=tolerance,
        contenders=tuple(contender or ()),
        as_json=as_json,
        junit=junit,
        jobs=jobs,
    )
    tune_gc_once()  # a long run in a process of its own, as `agentbus run` is
    code = run_async(lambda: runner(options))
    raise typer.Exit(code)
