"""`agentbus eval`: replay recordings through each policy, score, report, gate."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from agentbus.app import EvalOptions
from agentbus.envelope import Event, EventCodec
from agentbus.errors import ConfigurationError
from agentbus.llm import CassetteModel, Model, ModelRequest, ModelResponse, openai_model_from_env
from agentbus.llm.pricing import price, price_table
from agentbus.recording import read_recording
from evals import junit, report, workers
from evals.contenders import CONTENDERS, POLICY, Contender
from evals.families import from_spec
from evals.gate import regressions
from evals.replay import Actors, inputs_of, replay
from evals.scoring import ScenarioScore, judge, score
from evals.simulate import ScenarioActors
from evals.substitutes import CASES as SUBSTITUTE_CASES
from evals.substitutes import run_case as run_substitute
from evals.substitutes import summarise, synonyms
from events import CATALOG

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WORLDS = ".worlds.json"  # a spec of generated worlds (evals.families)
WORLD_SPECS = Path(__file__).resolve().parent / "worlds"
HELD_OUT = WORLD_SPECS / f"held-out{WORLDS}"
GATE = WORLD_SPECS / f"gate{WORLDS}"
BASELINE = FIXTURES / "baseline.json"
PARALLEL = 4  # replays in flight


@dataclass
class Case:
    name: str
    path: Path
    notes: str
    history_matters: bool
    events: list[Event[Any]]
    family: str | None = None  # a generated world's family
    # Who answers the shop during the replay (a generated world's buyer and supplier);
    # a recording holds their answers already.
    actors: Callable[[], Actors] | None = None


@dataclass
class Metered:
    """Counts what the model spends: the report shows tokens and cost per policy."""

    inner: Model
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    seconds: list[float] = field(default_factory=list)
    """How long each answer took when it was made (recorded ones: when recorded)."""
    name: str = field(init=False)
    provider: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name
        self.provider = self.inner.provider

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self.inner.complete(request)
        self.calls += 1
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens
        if response.seconds is not None:
            self.seconds.append(response.seconds)
        return response


def load_cases(paths: Sequence[Path]) -> list[Case]:
    """Recordings (`*.jsonl`, with a `.json` sidecar of notes) and generated worlds
    (`*.worlds.json`, evals.families): the files given, and those in the folders given."""
    files: list[Path] = []
    # By default: the recordings, and every family's held-out worlds.
    for path in paths or [FIXTURES, HELD_OUT]:
        if path.is_dir():
            # A folder's own recordings and world specs (a cassette beside them is not one).
            files.extend(sorted([*path.glob("*.jsonl"), *path.glob(f"*{WORLDS}")]))
        elif path.exists():
            files.append(path)
        else:
            raise ConfigurationError(f"{path}: no such recording or folder")
    if not files:
        raise ConfigurationError(f"no recordings (*.jsonl) or worlds (*{WORLDS}) to evaluate")
    codec = EventCodec(CATALOG)
    cases = []
    for file in files:
        if file.name.endswith(WORLDS):
            cases.extend(_generated(file))
            continue
        sidecar = file.with_suffix(".json")
        meta: dict[str, Any] = {}
        if sidecar.exists():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{sidecar}: not JSON ({exc.msg})") from None
        events = [recorded.event for recorded in read_recording(file, codec)]
        cases.append(
            Case(
                name=str(meta.get("scenario") or file.stem),
                path=file,
                notes=str(meta.get("notes") or ""),
                history_matters=bool(meta.get("history_matters", False)),
                events=events,
                family=str(meta["family"]) if meta.get("family") else None,
            )
        )
    return cases


def _generated(spec: Path) -> list[Case]:
    """A world per family and seed, made from the seed: its inputs, and the buyer and the
    supplier who answer the shop as the replay goes (the same for every contender)."""
    return [
        Case(
            name=world.name,
            path=spec,
            notes=world.notes,
            history_matters=world.history_matters,
            events=world.inputs(),
            family=world.family,
            actors=partial(ScenarioActors, world),
        )
        for world in from_spec(spec)
    ]


def model_factory(spec: str, record: Path | None) -> Callable[[], Model | None]:
    if spec == "policy":
        if record is not None:
            raise ConfigurationError("--record needs --model openai")
        return lambda: None
    if spec == "openai":
        if record is not None:
            return lambda: CassetteModel(record, inner=openai_model_from_env(), mode="record")
        return openai_model_from_env
    kind, _, path = spec.partition(":")
    if kind == "cassette" and path:
        if not Path(path).exists():
            raise ConfigurationError(f"cassette {path} does not exist")
        return lambda: CassetteModel(Path(path), mode="replay")
    raise ConfigurationError(f"--model {spec!r}: use policy, cassette:PATH or openai")


@dataclass(frozen=True)
class Outcome:
    """One replay of a case by a contender, scored: plain data, so that it crosses from a
    worker process."""

    scored: ScenarioScore
    figures: dict[str, Any]
    plot: dict[str, Any]


async def evaluate(request: EvalOptions, console: Console | None = None) -> int:
    console = console or Console(stderr=request.as_json)
    if request.repeat < 1:
        raise ConfigurationError("--repeat must be at least 1")
    cases = load_cases(request.paths)
    chosen = _contenders(request.contenders, uses_model=request.model != "policy")
    factory = model_factory(request.model, request.record)
    deterministic = request.model == "policy" or request.model.startswith("cassette:")
    prices = price_table()
    plan = [
        (index, contender, 1 if deterministic or not contender.uses_model else request.repeat)
        for index in range(len(cases))
        for contender in chosen
    ]
    runs: list[Run] = []
    for index, contender, count in plan:
        for attempt in range(count):
            # The first contender's first replay of a case gives the plots their series.
            first = contender is chosen[0] and attempt == 0
            runs.append(Run(len(runs), index, contender, series=first))
    total = sum(len(inputs_of(cases[index].events)) * count for index, _, count in plan)
    results: dict[str, Any] = {
        "model": request.model,
        "repeat": request.repeat,
        "scenarios": {},
    }
    # A live model and a recording of its answers stay in this process; replays are
    # otherwise independent and take a core each.
    jobs = (request.jobs or workers.cores()) if deterministic and request.record is None else 1
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tracker = _Progress(progress, progress.add_task("replaying", total=total))
        for run in runs:
            tracker.expect(run.key, len(inputs_of(cases[run.index].events)))
        if jobs > 1 and len(runs) > 1:
            outcomes = await _in_workers(request, runs, min(jobs, len(runs)), tracker)
        else:
            outcomes = await _in_process(cases, runs, factory, prices, tracker)
    position = 0
    for index, contender, count in plan:
        case = cases[index]
        mine = outcomes[position : position + count]
        position += count
        entry = results["scenarios"].setdefault(
            case.name,
            {"notes": case.notes, "history_matters": case.history_matters, "contenders": {}},
        )
        if case.family is not None:
            entry["family"] = case.family
        entry["contenders"][contender.name] = _combine([outcome.scored for outcome in mine])
        entry["contenders"][contender.name].update(mine[0].figures)
        report.add_plot_data(entry, mine[0].plot)
    if _whole_suite(request.paths):
        results["substitutes"] = await _substitutes(factory)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["margins"] = report.margins(results)
    results["families"] = report.families(results)
    results["comparison"] = report.comparison(results)
    request.out.mkdir(parents=True, exist_ok=True)
    report.write(results, request.out)
    report.print_table(console, results)
    report.print_families(console, results)
    report.print_comparison(console, results)
    report.print_substitutes(console, results)
    exit_code = 0
    if request.baseline is not None:
        if not request.baseline.exists():
            raise ConfigurationError(f"baseline {request.baseline} does not exist")
        baseline = json.loads(request.baseline.read_text())
        found = regressions(baseline, results, request.tolerance)
        report.print_regressions(console, found, request.baseline)
        exit_code = 1 if found else 0
    if request.as_json:
        console.file.flush()
        print(json.dumps(report.public(results), indent=2, sort_keys=True))
    if request.junit is not None:
        junit.write_results(
            request.out / "results.json", request.junit, request.baseline, request.tolerance
        )
    return exit_code


@dataclass(frozen=True)
class Run:
    key: int
    index: int  # the case's, in load_cases order
    contender: Contender
    series: bool


class _Progress:
    """One bar over every replay; a generated world's buyer and supplier add inputs as
    its replay goes, so each replay reports what it has published of how many."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task
        self._done: dict[int, int] = {}
        self._planned: dict[int, int] = {}

    def expect(self, key: int, planned: int) -> None:
        self._done[key], self._planned[key] = 0, planned

    def advance(self, key: int, published: int, planned: int) -> None:
        grown = planned - self._planned[key]
        if grown > 0:
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=total + grown)
            self._planned[key] = planned
        self._progress.advance(self._task, published - self._done[key])
        self._done[key] = published


async def _replay_case(
    case: Case,
    run: Run,
    factory: Callable[[], Model | None],
    prices: Any,
    advance: Callable[[int, int], None],
) -> Outcome:
    metered: list[Metered] = []

    def make_model() -> Model | None:
        inner = factory()
        if inner is None:
            return None
        meter = Metered(inner)
        metered.append(meter)
        return meter

    contender = run.contender
    replayed = await replay(
        case.events,
        lambda: contender.build(make_model),
        actors=case.actors() if case.actors else None,
        progress=advance,
    )
    judged = judge(replayed)
    tokens_in = sum(m.input_tokens for m in metered)
    tokens_out = sum(m.output_tokens for m in metered)
    model_name = metered[0].name if metered else "policy"
    scored = score(
        replayed,
        judged,
        latencies=_latencies(replayed),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        model_cost=price(model_name, tokens_in, tokens_out, table=prices),
    )
    return Outcome(
        scored,
        _model_figures(replayed, metered),
        report.plot_data(contender.name, replayed, judged, series=run.series),
    )


async def _in_process(
    cases: list[Case],
    runs: list[Run],
    factory: Callable[[], Model | None],
    prices: Any,
    tracker: _Progress,
) -> list[Outcome]:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(run: Run) -> Outcome:
        async with gate:
            return await _replay_case(
                cases[run.index], run, factory, prices, partial(tracker.advance, run.key)
            )

    return await asyncio.gather(*(one(run) for run in runs))


async def _in_workers(
    request: EvalOptions, runs: list[Run], jobs: int, tracker: _Progress
) -> list[Outcome]:
    """Each replay in a worker process (`evals.workers`). Workers load the cases
    themselves: an event's generic class does not pickle."""
    calls = [
        partial(
            _replay_in_worker,
            tuple(request.paths),
            request.model,
            run.key,
            run.index,
            run.contender.name,
            run.series,
        )
        for run in runs
    ]
    return await workers.run_in_workers(calls, jobs, lambda message: tracker.advance(*message))


@cache
def _cases_in_worker(paths: tuple[Path, ...]) -> list[Case]:
    return load_cases(paths)


def _replay_in_worker(
    paths: tuple[Path, ...], model: str, key: int, index: int, contender: str, series: bool
) -> Outcome:
    case = _cases_in_worker(paths)[index]
    chosen = _contenders([contender], uses_model=model != "policy")[0]
    run = Run(key, index, chosen, series)

    def advance(published: int, planned: int) -> None:
        workers.report((key, published, planned))

    factory = model_factory(model, None)
    return asyncio.run(_replay_case(case, run, factory, price_table(), advance))


def _whole_suite(paths: Sequence[Path]) -> bool:
    """The substitute cases run with the committed suite, not with a recording of one's own."""
    return not paths or any(path.resolve() == FIXTURES for path in paths)


async def _substitutes(factory: Callable[[], Model | None]) -> dict[str, Any]:
    """The substitute agent over its own cases, with the same model as the rest."""
    meters: list[Metered] = []

    def make_model() -> Model | None:
        inner = factory()
        if inner is None:
            return None
        meters.append(Metered(inner))
        return meters[-1]

    scores = await asyncio.gather(*(run_substitute(case, make_model) for case in SUBSTITUTE_CASES))
    summary = summarise(list(scores))
    summary["synonyms"] = await synonyms(make_model)
    summary["input_tokens"] = sum(m.input_tokens for m in meters)
    summary["output_tokens"] = sum(m.output_tokens for m in meters)
    return summary


def _contenders(names: Sequence[str], *, uses_model: bool = False) -> list[Contender]:
    if not names:
        # With a model deciding for the agent, the agent's own policy runs beside it.
        return [*CONTENDERS, POLICY] if uses_model else list(CONTENDERS)
    known = {c.name: c for c in (*CONTENDERS, POLICY)}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigurationError(
            f"unknown contender(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return [known[name] for name in names]


_FALLBACK = re.compile(r"^policy \((?:fallback: (\w+)|token budget spent)\)")


def _model_figures(replayed: Any, metered: list[Metered]) -> dict[str, Any]:
    """Who decided (the model, or the policy it fell back to) and how long answers took."""
    if not metered:
        return {}
    suggestions = replayed.of_type("restock.recommended")
    by_model = [s for s in suggestions if not str(s.data.model).startswith("policy")]
    seconds = sorted(t for meter in metered for t in meter.seconds)
    # Why the policy decided instead: MalformedOutput (the model's answer), CassetteMiss
    # (a replay that left its recording), ModelUnavailable, budget.
    fallbacks: dict[str, int] = {}
    for suggestion in suggestions:
        reason = _FALLBACK.search(str(suggestion.data.model))
        if reason is not None:
            name = reason.group(1) or "budget"
            fallbacks[name] = fallbacks.get(name, 0) + 1
    return {
        "model": metered[0].name,
        "decided_by_model": len(by_model),
        "fallbacks": dict(sorted(fallbacks.items())),
        "model_calls": sum(meter.calls for meter in metered),
        "model_p50_s": round(seconds[len(seconds) // 2], 2) if seconds else None,
    }


def _latencies(replayed: Any) -> list[float]:
    out = []
    for event in replayed.of_type("restock.recommended"):
        trigger = str(event.data.trigger_event_id)
        if trigger in replayed.seen_at and event.id in replayed.seen_at:
            out.append(replayed.seen_at[event.id] - replayed.seen_at[trigger])
    return out


def _combine(scores: list[ScenarioScore]) -> dict[str, Any]:
    """Mean figures over repeats; pass^k and flakiness over the hard checks."""
    first = scores[0].as_dict()
    combined: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, bool):
            continue
        values = [s.as_dict()[key] for s in scores]
        mean = sum(values) / len(values)
        # One run keeps integers as integers; k runs give means.
        combined[key] = value if len(scores) == 1 else round(mean, 3)
    passes = [s.passed for s in scores]
    combined["runs"] = len(scores)
    combined["passed"] = all(passes)  # pass^k: every one of the k runs passed
    combined["flaky"] = any(passes) and not all(passes)
    return combined


async def run_eval(options: EvalOptions) -> int:
    """The shop's `agentbus eval` (the `agentbus.evals` entry point named `shop`)."""
    return await evaluate(options)
