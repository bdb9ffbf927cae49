"""How long a process of the application takes to start, against a bare interpreter.

Every service process and every CLI command loads the application (each service's
and agent's declaration) before it does anything. Measured in fresh processes,
alternating, over rounds:

- baseline: the interpreter alone (`python -c pass`);
- application: `import agentbus.cli, consumers.app`, what a command loads first;
- help: the `agentbus --help` command, end to end.

Prints JSON: the median seconds of each, what each adds to the baseline, and
which heavy libraries loading the application pulled in (none is the aim: they
wait for a graph to be built or a model to be called).

    uv run python benchmarks/cli_startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("fastapi", "langgraph", "langchain_core", "openai", "psycopg", "statsforecast")
PROBE = (
    "import json, sys\nimport agentbus.cli, consumers.app\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
)


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cli = shutil.which("agentbus") or sys.exit("agentbus is not on PATH: run with `uv run`")
    commands = {
        "baseline": [sys.executable, "-c", "pass"],
        "application": [sys.executable, "-c", PROBE],
        "help": [cli, "--help"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    loaded: list[str] = []
    for round_ in range(args.rounds):
        # Each round starts one place further along, so that no command always runs
        # right after another.
        names = list(commands)
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            elapsed, out = timed(commands[name])
            seconds[name].append(elapsed)
            if name == "application":
                loaded = json.loads(out.strip().splitlines()[-1])
    median = {name: round(statistics.median(values), 3) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "cli_startup",
                "rounds": args.rounds,
                "seconds": {
                    name: [round(v, 3) for v in values] for name, values in seconds.items()
                },
                "median_seconds": median,
                "over_baseline_seconds": {
                    name: round(median[name] - median["baseline"], 3)
                    for name in ("application", "help")
                },
                "heavy_libraries_loaded_by_the_application": loaded,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
