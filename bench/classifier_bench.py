"""Classification latency over the typical (at most 2 KB of text) requests of the labelled dev set.

    python bench/classifier_bench.py [DATASET] [--calls 20] [--rounds 5] [--max-median-us 50]

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
from ollama_agent_router.classifier_eval import TYPICAL_TOKENS, load_cases, request_args


def per_call_us(args: tuple, calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            classify(*args)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best / 1000


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "tests" / "data" / "classifier_dev.jsonl")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-median-us", type=float, default=None)
    args = parser.parse_args(argv)

    requests = [request_args(case.body) for case in load_cases(args.dataset)]
    typical = [a for a in requests if classify(*a).token_estimate <= TYPICAL_TOKENS]
    timings = sorted(per_call_us(a, args.calls, args.rounds) for a in typical)
    median = statistics.median(timings)
    print(f"python {sys.version.split()[0]}, {len(typical)} requests of <= {TYPICAL_TOKENS * 4} characters")
    print(f"classify(): median {median:.1f} us, p99 {percentile(timings, 0.99):.1f} us, max {timings[-1]:.1f} us")
    if args.max_median_us is not None and median > args.max_median_us:
        print(f"FAIL: median above {args.max_median_us} us")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
