"""kill -9 under a steady async load: no job accepted with 202 is ever lost or duplicated (sqlite store).

    python bench/drills/kill_jobs.py [--cycles 20] [--rate 8] [--seed N]

The real router process runs with ``jobs.store: sqlite`` against the simulator (on its own thread in this
process, so it outlives the router). A load thread submits async chat jobs at a steady rate through the
whole drill, each with a unique marker in its prompt; the router is killed with SIGKILL at a random
moment 20 times and restarted on the same port. Afterwards the load stops and every job is followed to
its end. For every job that got a 202:

- it still exists (``GET /v1/jobs/{id}``), and in the sqlite file exactly once;
- it ends ``succeeded`` (with a result) or ``failed`` with a reason; nothing stays queued or running;
- the simulator saw its marker at least once. A job running when the router died runs again after
  the restart (at-least-once); those re-runs are counted, not hidden.

Figure: jobs lost, jobs duplicated, jobs without an end or a reason: 0.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import drillkit
from conftest import chat_body
from drillkit import TEST_CONFIG, RouterProcess, SimThread, call, merge, wait_for


def router_config(tmp: Path, sim_url: str) -> dict:
    return merge(TEST_CONFIG, {
        "ollama": {"baseUrl": sim_url},
        "jobs": {"store": "sqlite", "sqlitePath": str(tmp / "jobs.sqlite"), "maxAttempts": 3, "retryBackoffMs": 100,
                 "maxRetainedJobs": 100_000},
        "queue": {"globalMaxQueued": 100_000, "perUserMaxQueued": 100_000},
    })


class Load:
    """Submits async jobs at ``rate`` per second until stopped; remembers every 202."""

    def __init__(self, port: int, rate: float) -> None:
        self.port = port
        self.interval = 1 / rate
        self.accepted: dict[str, str] = {}  # job id -> marker
        self.refused = Counter()  # what the other attempts got (the router was down, ...)
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.n += 1
            marker = f"drill-job-{self.n:06d}"
            try:
                status, _, body = call(self.port, "POST", "/v1/chat/completions",
                                       chat_body(f"Hello there {marker}", mode="async"), timeout=5)
                if status == 202:
                    self.accepted[body["id"]] = marker
                else:
                    self.refused[str(status)] += 1
            except OSError as e:
                self.refused[type(e).__name__] += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def run(cycles: int, rate: float, seed: int, tmp: Path, up_s: tuple[float, float] = (1.0, 3.0)) -> dict:
    rng = random.Random(seed)
    sim = SimThread(tokens_per_second=100, reply_tokens=8)  # about 0.1 s a job, two at a time per model
    router = RouterProcess(tmp, router_config(tmp, sim.url)).start()
    load = Load(router.port, rate).start()
    started = time.monotonic()
    try:
        for _ in range(cycles):
            time.sleep(rng.uniform(*up_s))  # the load runs meanwhile; the kill lands wherever it lands
            router.kill(signal.SIGKILL)
            router.start()
        load.stop()

        def status_of(job_id: str) -> str:
            code, _, record = call(router.port, "GET", f"/v1/jobs/{job_id}")
            return record["status"] if code == 200 else f"http {code}"

        pending = set(load.accepted)

        def all_ended() -> bool:
            for job_id in list(pending):
                if status_of(job_id) not in ("queued", "running"):
                    pending.discard(job_id)
            return not pending

        wait_for(all_ended, timeout=120, interval=0.5)
        records = {}
        for job_id in load.accepted:
            code, _, record = call(router.port, "GET", f"/v1/jobs/{job_id}")
            records[job_id] = record if code == 200 else None
    finally:
        load.stop()
        router.stop()
        executions = Counter(c["body"]["messages"][0]["content"].rsplit(" ", 1)[-1]
                             for c in sim.sim.calls if c["path"] == "/v1/chat/completions" and c["body"])
        sim.stop()
    db = sqlite3.connect(tmp / "jobs.sqlite")
    rows = Counter(job_id for (job_id,) in db.execute("SELECT id FROM jobs"))
    db.close()

    lost = [j for j, r in records.items() if r is None or rows[j] == 0]
    duplicated = [j for j in load.accepted if rows[j] > 1]
    statuses = Counter(r["status"] for r in records.values() if r)
    no_reason = [j for j, r in records.items() if r and r["status"] == "failed"
                 and not json.loads(r["error_json"] or "{}").get("message")]
    unfinished = [j for j, r in records.items() if r and r["status"] not in ("succeeded", "failed")]
    no_result = [j for j, r in records.items() if r and r["status"] == "succeeded"
                 and json.loads(r["result_json"] or "{}").get("object") != "chat.completion"]
    never_ran = [j for j, r in records.items() if r and r["status"] == "succeeded" and not executions[load.accepted[j]]]
    reasons = Counter(json.loads(r["error_json"])["code"] for r in records.values() if r and r["status"] == "failed")
    return {
        "cycles": cycles, "accepted": len(load.accepted), "lost": lost, "duplicated": duplicated,
        "unfinished": unfinished, "no_reason": no_reason, "no_result": no_result, "never_ran": never_ran,
        "statuses": dict(statuses), "failure_reasons": dict(reasons),
        "rerun": sum(1 for j in load.accepted if executions[load.accepted[j]] > 1),
        "refused": dict(load.refused), "submitted": load.n, "seconds": round(time.monotonic() - started, 1),
        "seed": seed,
    }


def failures(r: dict) -> list[str]:
    return [f"{k}: {r[k][:5]}" for k in ("lost", "duplicated", "unfinished", "no_reason", "no_result", "never_ran")
            if r[k]]


def report(r: dict) -> str:
    return "\n".join([
        f"kill -9 cycles: {r['cycles']}; jobs accepted with 202: {r['accepted']} (of {r['submitted']} submitted; "
        f"the others while the router was down or starting: {r['refused']})",
        f"lost: {len(r['lost'])}; duplicated: {len(r['duplicated'])}; without an end: {len(r['unfinished'])}; "
        f"failed without a reason: {len(r['no_reason'])}",
        f"ended: {r['statuses']}; failure reasons: {r['failure_reasons'] or 'none'}; run again after a kill "
        f"(at-least-once): {r['rerun']}",
        f"{r['seconds']} s; seed {r['seed']}; {drillkit.machine()}",
    ] + [f"FAIL {f}" for f in failures(r)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--rate", type=float, default=8.0, help="async jobs submitted per second")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.cycles, args.rate, seed, Path(tmp))
    print(report(r))
    return 1 if failures(r) else 0


if __name__ == "__main__":
    sys.exit(main())
