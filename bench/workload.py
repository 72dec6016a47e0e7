"""Scheduling quality under a mixed agent workload on one GPU (issue 18): loads, latency, starvation.

    python bench/workload.py                      # every policy, seeds 1-5, the table
    python bench/workload.py --plot docs/workload-residency.svg

Each (policy, seed) runs in its own process (``wlrun.py``) in virtual time: the figures are simulated
seconds, the same on any machine however busy, and the runs go side by side (``--jobs``). The policies:

- direct: each agent names its model, straight to the simulated Ollama (its FIFO scheduler);
- fifo: through the router, routing on, load batching and aging off (``queue.loadBatching: false``,
  ``queue.agingMs: 0``);
- full: through the router with ``examples/gex44.yaml``'s scheduler, steering off;
- steer: full, and ``queue.steerEvictions: true`` (as ``examples/gex44.yaml`` ships).

Every figure is the median over the seeds of that seed's figure. "wait" is a request's latency less the
time its own prompt and tokens take on its model alone: queues, loads, and sharing the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from agents import AGENTS, MODELS  # noqa: E402

TITLES = {"direct": "direct (Ollama's FIFO)", "fifo": "router, FIFO (no load batching, no aging)",
          "full": "router, full (today's scheduler)", "steer": "router, full + steered evictions"}
AGING_S = 30.0  # the profile's queue.agingMs (the default)


def run_one(options: dict) -> dict:
    """One (policy, seed) run in a fresh process (``wlrun.Options`` as JSON)."""
    argv = [sys.executable, str(HERE / "wlrun.py"), json.dumps(options)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{options} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def figures(run: dict) -> dict[str, float]:
    """One run's figures, by name."""
    out: dict[str, float] = {"makespan s": run["makespan"]}
    outcomes = run["outcomes"]
    for agent in AGENTS:
        mine = [o for o in outcomes if o["agent"] == agent.name]
        ok = [o["latency"] for o in mine if o["status"] == 200]
        for p in (50, 95, 99):
            out[f"{agent.name} p{p} s"] = pct(ok, p / 100)
        out[f"{agent.name} requests"] = len(mine)
    gpu = run["gpu"]
    out["model loads"] = gpu["loads"]
    for model in MODELS:
        out[f"  loads of {model}"] = run["loads"].count(model)
    out["load seconds"] = gpu["load_seconds"]
    for state in ("generating", "loading", "idle"):
        out[f"GPU {state} %"] = 100 * gpu[state] / run["makespan"]
    refused = [s for o in outcomes for s in o["refused"]]
    out["429 answers"] = refused.count(429)
    out["503 answers"] = refused.count(503)
    out["failed requests"] = sum(o["status"] != 200 for o in outcomes)
    low = {a.name for a in AGENTS if (a.router or {}).get("priority") == "low"}
    out["longest wait, low priority s"] = max((o["wait"] for o in outcomes if o["agent"] in low), default=0.0)
    out["longest wait, any s"] = max((o["wait"] for o in outcomes), default=0.0)
    queued = [o["queued"] for o in outcomes if o["queued"] is not None]
    out["longest in the router's queue s"] = max(queued, default=math.nan)
    return out


def served_by(runs: list[dict]) -> dict[str, dict[str, int]]:
    """Which models answered each agent, over all seeds."""
    counts: dict[str, dict[str, int]] = {}
    for run in runs:
        for o in run["outcomes"]:
            if o["status"] == 200:
                per = counts.setdefault(o["agent"], {})
                per[o["model"]] = per.get(o["model"], 0) + 1
    return counts


def medians(runs: list[dict]) -> dict[str, float]:
    per_run = [figures(r) for r in runs]
    return {k: statistics.median(f[k] for f in per_run) for k in per_run[0]}


def table(results: dict[str, dict[str, float]]) -> str:
    """The medians, one column per policy; the last column compares the last policy with ``direct``."""
    names = list(results)
    lines = ["| measure (median of seeds) | " + " | ".join(names) + f" | {names[-1]} vs direct |",
             "|---|" + "---:|" * (len(names) + 1)]
    for key in results[names[0]]:
        cells = [_fmt(results[n][key]) for n in names]
        base, full = results["direct"][key], results[names[-1]][key]
        change = f"{100 * (full - base) / base:+.0f}%" if base and not math.isnan(base) else ""
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {change} |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.1f}"


def targets(direct: dict[str, float], full: dict[str, float]) -> list[tuple[str, str, bool]]:
    """The issue's targets for a policy's medians against ``direct``'s: (target, measured, met)."""
    loads = 1 - full["model loads"] / direct["model loads"]
    coder = 1 - full["coder p95 s"] / direct["coder p95 s"]
    worst = max((full[f"{a.name} p99 s"] / direct[f"{a.name} p99 s"] - 1, a.name) for a in AGENTS)
    wait = full["longest wait, any s"]
    return [
        (">= 30% fewer model loads", _less(loads, "fewer", "more"), loads >= 0.30),
        (">= 20% lower coder p95", _less(coder, "lower", "higher"), coder >= 0.20),
        ("no agent's p99 worse by > 10%", f"worst: {worst[1]} {100 * worst[0]:+.0f}%", worst[0] <= 0.10),
        (f"no wait > 2x aging ({2 * AGING_S:.0f} s)", f"longest {wait:.1f} s", wait <= 2 * AGING_S),
    ]


def _less(share: float, less: str, more: str) -> str:
    return f"{100 * share:.0f}% {less}" if share >= 0 else f"{-100 * share:.0f}% {more}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="seeds 1..N (default 5)")
    ap.add_argument("--minutes", type=float, default=30, help="minutes of arrivals per run (default 30)")
    ap.add_argument("--load-s-per-gb", type=float, default=2.0, help="model load time (default 2 s per GB)")
    ap.add_argument("--policies", default=",".join(TITLES), help=f"comma-separated, from {','.join(TITLES)}")
    ap.add_argument("--single-coder", action="store_true", help="a variant: the code routes list one coder")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side")
    ap.add_argument("--plot", type=Path, help="write seed 1's model residency over time, per policy, as SVG")
    ap.add_argument("--json", action="store_true", help="print the medians as JSON instead of the table")
    args = ap.parse_args()
    policies = args.policies.split(",")
    if not set(policies) <= set(TITLES):
        ap.error(f"--policies: each one of {', '.join(TITLES)}")
    started = time.perf_counter()
    jobs = [{"policy": p, "seed": s, "horizon": args.minutes * 60, "load_s_per_gb": args.load_s_per_gb,
             "timeline": args.plot is not None and s == 1, "single_coder": args.single_coder}
            for p in policies for s in range(1, args.seeds + 1)]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(run_one, jobs))
    runs = {p: [r for r in done if r["policy"] == p] for p in policies}
    results = {p: medians(rs) for p, rs in runs.items()}
    wall = time.perf_counter() - started
    if args.json:
        print(json.dumps({"medians": results, "servedBy": {p: served_by(rs) for p, rs in runs.items()},
                          "wallSeconds": wall}))
        return
    compared = "direct" in results and len(results) > 1
    print(table(results) if compared else json.dumps(results, indent=1))
    print()
    for p, rs in runs.items():
        print(f"served by ({p}): " + "; ".join(f"{a}: " + ", ".join(f"{m} {n}" for m, n in sorted(c.items()))
                                               for a, c in sorted(served_by(rs).items())))
    if compared:
        for name in (n for n in results if n != "direct"):
            print(f"\ntargets, {name} against direct:")
            for target, measured, met in targets(results["direct"], results[name]):
                print(f"  {'met   ' if met else 'MISSED'}  {target}: {measured}")
    if args.plot is not None:
        from residency_svg import write_svg

        first = [(TITLES[p], next(r for r in rs if r["seed"] == 1)) for p, rs in runs.items()]
        write_svg(args.plot, first, list(MODELS))
        print(f"\nwrote {args.plot}")
    print(f"\n{len(jobs)} runs of {args.minutes:g} simulated minutes in {wall:.1f} s wall")


if __name__ == "__main__":
    main()
