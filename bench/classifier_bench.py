"""Classification latency over the typical (at most 2 KB of text) requests of the labelled dev set, or over
every request of an agent set (tests/data/agents/*.jsonl: Claude Code's 74-78 KB bodies, Codex's 41-44 KB).

    python bench/classifier_bench.py [DATASET] [--calls 20] [--rounds 5] [--max-median-us 50]

An agent request is timed as the router classifies it: its door's reading of the body (``classifier_input``)
and ``classify()`` together; the JSON parse before them is not counted. Agent sets are also reported by kind
of turn: first turns (the user's first ask), follow-up asks (an ask after earlier turns) and mid-loop turns.

Each request is classified ``calls`` times back to back and the time divided by ``calls`` (one timer read per
call would weigh as much as the work); of ``rounds`` such runs the fastest counts, which filters out other
processes on a shared machine. The median and p99 over requests are printed. With ``--max-median-us`` the exit
status is 1 when the median is above it, so CI can hold the target without a timed unit test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ollama_agent_router.classifier import classify
from ollama_agent_router.classifier_eval import TYPICAL_TOKENS, Case, load_cases, request_args


def per_call_us(case: Case, calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            classify(*request_args(case.body, case.path))
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best / 1000


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def kind(case: Case) -> str:
    if case.turn == "loop":
        return "mid-loop turns"
    messages = request_args(case.body, case.path)[0]
    return "follow-up asks" if any(m.get("role") == "assistant" for m in messages) else "first turns"


def summary(timings: list[float]) -> str:
    ordered = sorted(timings)
    return (f"median {statistics.median(ordered):.1f} us, p99 {percentile(ordered, 0.99):.1f} us, "
            f"max {ordered[-1]:.1f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "tests" / "data" / "classifier_dev.jsonl")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-median-us", type=float, default=None)
    args = parser.parse_args(argv)

    cases = load_cases(args.dataset)
    agents = any(case.path != Case.path for case in cases)
    typical = cases if agents else [c for c in cases if classify(*request_args(c.body)).token_estimate <= TYPICAL_TOKENS]
    timings = [per_call_us(c, args.calls, args.rounds) for c in typical]
    median = statistics.median(timings)
    what = "agent requests, door reading included" if agents else f"requests of <= {TYPICAL_TOKENS * 4} characters"
    print(f"python {sys.version.split()[0]}, {len(typical)} {what}")
    print(f"classify(): {summary(timings)}")
    if agents:
        kinds: dict[str, list[float]] = {}
        for case, micros in zip(typical, timings):
            kinds.setdefault(kind(case), []).append(micros)
        for name, values in sorted(kinds.items()):
            print(f"  {name} ({len(values)}): {summary(values)}")
    if args.max_median_us is not None and median > args.max_median_us:
        print(f"FAIL: median above {args.max_median_us} us")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
