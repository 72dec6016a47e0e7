"""Graceful shutdown: SIGTERM under load finishes in-flight requests, keeps queued jobs, and exits 0.

    python bench/drills/shutdown.py [--rounds 3]

Each round runs the real router process (sqlite job store, ``server.shutdownGraceMs`` 8 s) against a
simulator pacing replies at about a second. It starts sync and streaming requests and queues async jobs
behind them, waits until requests are generating, and sends SIGTERM. Then:

- every in-flight sync request gets its 200 and every stream its ``[DONE]``, within the grace period;
- no queued job starts after SIGTERM (it would only be interrupted, or hold up the exit);
- a new connection after SIGTERM is refused (or answered 503), never left hanging;
- the process exits with status 0;
- every accepted job is in the sqlite file, queued or finished; after a restart every one of them ends
  ``succeeded``; none is lost.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import drillkit
from conftest import DEEPSEEK, QWEN, VIBE, chat_body
from drillkit import TEST_CONFIG, RouterProcess, SimThread, call, merge, wait_for

GRACE_MS = 8000


def router_config(tmp: Path, sim_url: str) -> dict:
    return merge(TEST_CONFIG, {
        "server": {"shutdownGraceMs": GRACE_MS},
        "ollama": {"baseUrl": sim_url},
        "jobs": {"store": "sqlite", "sqlitePath": str(tmp / "jobs.sqlite"), "maxAttempts": 2},
        "queue": {"globalMaxQueued": 1000, "perUserMaxQueued": 1000},
    })


def one_round(tmp: Path, sim: SimThread, jobs: int) -> dict:
    sim.run(lambda: setattr(sim.sim.run, "tokens_per_second", 20))  # about a second a reply
    router = RouterProcess(tmp, router_config(tmp, sim.url), log_level="info").start()
    # Four requests that all run at once (queue.globalMaxConcurrent is 4): two sync on the 2-slot model,
    # a stream on each 1-slot coder model. The async jobs then wait behind them.
    calls = [("sync", VIBE), ("sync", VIBE), ("stream", QWEN), ("stream", DEEPSEEK)]
    results: list[object] = []

    def client(mode: str, model: str) -> None:
        body = dict(chat_body("Hello there", allowAsync=False), model=model, stream=mode == "stream")
        try:
            status, _, reply = call(router.port, "POST", "/v1/chat/completions", body, timeout=30)
        except OSError as e:
            results.append(f"{mode}: {type(e).__name__}")
            return
        text = str(reply)
        done = status == 200 and (text.rstrip().endswith("data: [DONE]") if mode == "stream"
                                  else bool(reply["choices"][0]["message"]["content"]))
        results.append(True if done else f"{mode}: {status} {text[-200:]!r}")

    threads = [threading.Thread(target=client, args=c) for c in calls]
    for t in threads:
        t.start()
    wait_for(lambda: call(router.port, "GET", "/v1/router/runtime")[2]["queues"]["globalRunning"] == len(calls),
             timeout=10)
    accepted = []
    for i in range(jobs):
        status, _, body = call(router.port, "POST", "/v1/chat/completions", chat_body(f"Hello there {i}", mode="async"))
        assert status == 202, (status, body)
        accepted.append(body["id"])
    calls_before = _chat_calls(sim)
    signalled = time.monotonic()
    router.send(signal.SIGTERM)

    # A newcomer must be turned away at once, not left waiting.
    wait_for(lambda: _refusing(router.port) is not None or not router.alive(), timeout=5, interval=0.01)
    newcomer = _refusing(router.port) or "exited before the check"
    try:
        code = router.proc.wait(GRACE_MS / 1000 + 10)  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        router.kill(signal.SIGKILL)
        code = "did not exit"
    exit_s = time.monotonic() - signalled
    started_after_sigterm = _chat_calls(sim) - calls_before
    for t in threads:
        t.join(30)

    db = sqlite3.connect(tmp / "jobs.sqlite")
    stored = dict(db.execute("SELECT id, status FROM jobs"))
    db.close()
    persisted = {j: stored.get(j) for j in accepted}
    sim.run(lambda: setattr(sim.sim.run, "tokens_per_second", 0))  # the rest need not wait on pacing
    router.start()
    wait_for(lambda: all(_job_status(router.port, j) in ("succeeded", "failed") for j in accepted), timeout=60)
    after = {j: _job_status(router.port, j) for j in accepted}
    router.stop()
    log = router.log_text()
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp / "jobs.sqlite") + suffix).unlink(missing_ok=True)
    return {
        "in_flight": len(calls), "finished": sum(r is True for r in results),
        "client_failures": [r for r in results if r is not True],
        "exit_code": code, "exit_s": round(exit_s, 2), "newcomer": newcomer,
        "jobs": jobs, "persisted": sum(s in ("queued", "running", "succeeded") for s in persisted.values()),
        "persisted_states": sorted(set(map(str, persisted.values()))),
        "started_after_sigterm": started_after_sigterm,
        "succeeded_after_restart": sum(s == "succeeded" for s in after.values()),
        "clean_stop": '"event":"stopped","clean":true' in log,
    }


def _chat_calls(sim: SimThread) -> int:
    return sim.run(lambda: sum(c["path"] == "/v1/chat/completions" for c in sim.sim.calls))


def _refusing(port: int) -> str | None:
    """How a new connection is turned away now, or None if the router still serves it normally."""
    try:
        status, _, body = call(port, "GET", "/health", timeout=2)
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as e:
        return f"{type(e).__name__}"
    if status == 503:
        return f"503 {body['error']['code']}"
    return None


def _job_status(port: int, job_id: str) -> str:
    status, _, record = call(port, "GET", f"/v1/jobs/{job_id}")
    return record["status"] if status == 200 else f"http {status}"


def run(rounds: int, tmp: Path, jobs: int = 10) -> list[dict]:
    sim = SimThread(reply_tokens=20, num_parallel=2)
    try:
        return [one_round(tmp, sim, jobs) for _ in range(rounds)]
    finally:
        sim.stop()


def failures(rounds: list[dict]) -> list[str]:
    out = []
    for i, r in enumerate(rounds):
        if r["finished"] != r["in_flight"]:
            out.append(f"round {i}: in-flight requests not finished: {r['client_failures']}")
        if r["exit_code"] != 0:
            out.append(f"round {i}: exit status {r['exit_code']}")
        if r["exit_s"] > GRACE_MS / 1000 + 2:
            out.append(f"round {i}: took {r['exit_s']} s to exit, the grace period is {GRACE_MS / 1000} s")
        if r["persisted"] != r["jobs"] or r["succeeded_after_restart"] != r["jobs"]:
            out.append(f"round {i}: jobs persisted {r['persisted']}/{r['jobs']}, succeeded after the restart "
                       f"{r['succeeded_after_restart']}/{r['jobs']}")
        if r["newcomer"] not in ("connection refused", "exited before the check") and not r["newcomer"].startswith("503"):
            out.append(f"round {i}: a new connection during shutdown got {r['newcomer']}")
        if r["started_after_sigterm"]:
            out.append(f"round {i}: {r['started_after_sigterm']} queued jobs started after SIGTERM")
        if not r["clean_stop"]:
            out.append(f"round {i}: the router did not report a clean stop")
    return out


def report(rounds: list[dict]) -> str:
    rows = [[i + 1, f"{r['finished']}/{r['in_flight']}", r["newcomer"], r["exit_code"], r["exit_s"],
             r["started_after_sigterm"], f"{r['persisted']}/{r['jobs']} ({', '.join(r['persisted_states'])})",
             f"{r['succeeded_after_restart']}/{r['jobs']}"] for i, r in enumerate(rounds)]
    return "\n".join([drillkit.md_table(["round", "in-flight sync+stream finished", "new connection", "exit status",
                                         "exit s", "jobs started after SIGTERM", "jobs in sqlite at exit",
                                         "jobs succeeded after restart"],
                                        rows), drillkit.machine()] + [f"FAIL {f}" for f in failures(rounds)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rounds = run(args.rounds, Path(tmp))
    print(report(rounds))
    return 1 if failures(rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
