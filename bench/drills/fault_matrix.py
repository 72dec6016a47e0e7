"""Fault matrix: Ollama misbehaving in every way the simulator can, for sync, streaming and async requests.

    python bench/drills/fault_matrix.py [--repeat 3]

Rows: Ollama down when the router starts; Ollama going down mid-request; 500; 503 (queue full); 404
(model not pulled); a first byte slower than the model timeout; a stream dropped mid-way; a stream that
ends without ``[DONE]``; ``/api/ps`` hanging. Each cell sends one request of its mode through the real
router (in-process, simulator on loopback) and checks:

- the client gets a clean, correct answer: the expected error status and code, an SSE error event after
  a started stream, a job that succeeds after a retry or fails with a reason, or a successful failover;
- nothing leaks: every model's running and queued counts, the global counts, queued and running jobs
  and the simulator's in-flight requests are all back to 0;
- ``GET /v1/router/runtime``, polled every 50 ms by a side client through the whole cell, keeps
  answering fast (its worst latency is reported);
- after the fault clears, a plain request succeeds (the router recovered).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import drillkit
from conftest import Stack, chat_body
from drillkit import TEST_CONFIG, wait_for

from ollama_agent_router.log import Logger
from ollama_agent_router.simulator.run import Fault

MODEL_TIMEOUT_MS = 1500
SLOW_SIM = {"tokens_per_second": 50, "reply_tokens": 25}  # about 0.5 s a reply: time to break it mid-way
MODES = ("sync", "stream", "async")


def override() -> dict:
    return {
        "models": [dict(m, timeoutMs=MODEL_TIMEOUT_MS) for m in TEST_CONFIG["models"]],
        "jobs": {"maxAttempts": 3, "retryBackoffMs": 300},
        "router": {"failover": {"cooldownFailures": 1000}},  # one drill's failures must not bench a model for the next
    }


@dataclass
class Cell:
    outcome: str = ""
    ok: bool = False
    leaks: str = ""
    runtime_max_ms: float = 0.0
    recovered: bool = False


@dataclass
class Row:
    name: str
    expect: dict[str, set[str]]  # mode -> acceptable outcomes
    setup: Callable[[Stack], None] | None = None  # before the request (inject a fault, take Ollama down)
    during: Callable[[Stack, str], None] | None = None  # while the request runs (break it mid-way)
    clear: Callable[[Stack], None] | None = None  # after the request: undo the fault
    slow: bool = False  # the simulator paces its replies
    reboot_down: bool = False  # restart the router while Ollama is down
    cells: dict[str, Cell] = field(default_factory=dict)


# ---- what each fault does ---------------------------------------------------------------------------------

def inject(target: str, **fault: Any) -> Callable[[Stack], None]:
    def apply(stack: Stack) -> None:
        stack.run(lambda: stack.sim.inject(target, Fault(**fault)))
    return apply


def set_down(down: bool) -> Callable[[Stack], None]:
    def apply(stack: Stack) -> None:
        async def switch() -> None:
            await stack.sim.set_down(down)
        stack.call(switch())
    return apply


def clear_faults(stack: Stack) -> None:
    stack.run(stack.sim.clear_faults)


def down_mid_request(stack: Stack, mode: str) -> None:
    wait_for(lambda: sum(stack.run(lambda: dict(stack.sim.in_flight)).values()) > 0, timeout=10)
    set_down(True)(stack)
    set_down(False)(stack)  # back at once: a retry may succeed, a request in flight has lost its connection


def reboot_router(stack: Stack) -> None:
    """Stop the router, take Ollama down, start the router again (so it starts with no Ollama)."""
    from ollama_agent_router.app import App

    async def reboot() -> int:
        log = stack.app.log
        await stack.app.stop(1.0)
        await stack.sim.set_down(True)
        stack.app = App(stack.cfg, log=log, gpu_backend=stack.sim.gpu_backend())
        return await stack.app.start("127.0.0.1", 0)

    stack.port = stack.call(reboot())
    stack.url = f"http://127.0.0.1:{stack.port}"


ROWS: list[Callable[[], Row]] = [
    lambda: Row("Ollama down at router start", {
        "sync": {"503 ollama_unreachable"}, "stream": {"503 ollama_unreachable"},
        "async": {"202 -> failed: ollama_unreachable"}}, reboot_down=True, clear=set_down(False)),
    lambda: Row("Ollama goes down mid-request", {
        "sync": {"503 ollama_unreachable", "502 upstream_error", "200 failed over"},
        "stream": {"200 error event: upstream_stream_error"},
        "async": {"202 -> succeeded after retry", "202 -> failed: ollama_unreachable", "202 -> failed: upstream_error"}},
        during=down_mid_request, slow=True),
    lambda: Row("500 from Ollama", {
        "sync": {"200 failed over"}, "stream": {"200 [DONE] failed over"}, "async": {"202 -> succeeded after retry"}},
        setup=inject("*", status=500, message="llama runner process has terminated")),
    lambda: Row("503 from Ollama (queue full)", {
        "sync": {"200 failed over"}, "stream": {"200 [DONE] failed over"}, "async": {"202 -> succeeded after retry"}},
        setup=inject("*", status=503, message="server busy, please try again.  maximum pending requests exceeded")),
    lambda: Row("404 (model not pulled)", {
        "sync": {"404 model_not_found"}, "stream": {"404 model_not_found"}, "async": {"202 -> failed: model_not_found"}},
        setup=inject("*", status=404, times=None), clear=clear_faults),
    lambda: Row(f"first byte later than the {MODEL_TIMEOUT_MS} ms timeout", {
        "sync": {"504 upstream_timeout"}, "stream": {"504 upstream_timeout"},
        "async": {"202 -> failed: upstream_timeout"}},
        setup=inject("*", first_byte_delay_s=MODEL_TIMEOUT_MS / 1000 + 1.5, times=None), clear=clear_faults),
    lambda: Row("stream dropped mid-way", {
        "sync": {"502 upstream_error"}, "stream": {"200 error event: upstream_stream_error"},
        "async": {"202 -> succeeded after retry"}},
        setup=inject("*", drop_after_chunks=3)),
    lambda: Row("stream ends without [DONE]", {
        "sync": {"200 failed over"}, "stream": {"200 error event: upstream_stream_error"},
        "async": {"202 -> succeeded after retry"}},
        setup=inject("*", no_done=True)),
    lambda: Row("/api/ps hangs", {
        "sync": {"200"}, "stream": {"200 [DONE]"}, "async": {"202 -> succeeded"}},
        setup=lambda s: (inject("/api/ps", first_byte_delay_s=30, times=None)(s), s.run(s.app.snapshot.poke)),
        clear=clear_faults),
]


# ---- one cell -----------------------------------------------------------------------------------------------

def _post(stack: Stack, body: dict) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _code(data: bytes) -> str:
    try:
        return json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "?"


def request(stack: Stack, mode: str) -> str:
    """Send one request of ``mode`` and describe what the client got."""
    body = chat_body("Hello there", allowAsync=False) if mode != "async" else chat_body("Hello there", mode="async")
    if mode == "stream":
        body["stream"] = True
    status, headers, data = _post(stack, body)
    if mode == "async":
        if status != 202:
            return f"{status} {_code(data)}"
        job_id = json.loads(data)["id"]
        record = wait_for(lambda: _finished(stack, job_id), timeout=20, interval=0.02)
        if record["status"] == "succeeded":
            return "202 -> succeeded" + (" after retry" if record["attempts"] > 1 else "")
        error = json.loads(record["error_json"] or "{}")
        return f"202 -> {record['status']}: {error.get('code', '?')}" + ("" if error.get("message") else " (no reason)")
    if status != 200:
        return f"{status} {_code(data)}"
    failed_over = " failed over" if "Failed over" in headers.get("x-router-decision-reason", "") else ""
    if mode == "sync":
        return "200" + failed_over
    text = data.decode("utf-8", "replace").rstrip()
    if text.endswith("data: [DONE]"):
        return "200 [DONE]" + failed_over
    last = text.rsplit("\n", 1)[-1]
    try:
        return f"200 error event: {json.loads(last[len('data: '):])['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"200 stream cut without an error event: {last[-80:]!r}"


def _finished(stack: Stack, job_id: str) -> dict | None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.request("GET", f"/v1/jobs/{job_id}")
        record = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return record if record["status"] not in ("queued", "running") else None


class RuntimePoller:
    """GET /v1/router/runtime every 50 ms on its own connection; keeps the worst latency and any failure."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.worst = 0.0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "RuntimePoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, _, body = drillkit.call(self.stack.port, "GET", "/v1/router/runtime", timeout=5)
                if status != 200 or "queues" not in body:
                    self.errors.append(f"runtime answered {status}")
            except OSError as e:
                self.errors.append(f"runtime: {type(e).__name__}: {e}")
            self.worst = max(self.worst, time.monotonic() - started)
            self._stop.wait(0.05)


def leaks(stack: Stack) -> str:
    """'' when every count is back to 0, else what is left."""
    def counts() -> dict:
        app = stack.app
        sched = app.scheduler
        per_model = {m: sched.counts(m) for m in app.table.models if sched.counts(m) != (0, 0)}
        jobs = app.jobs.summary()
        left = {"running": sched.total_running, "waiting": sched.total_waiting,
                "jobs queued": jobs["queued"], "jobs running": jobs["running"],
                "simulator in flight": sum(stack.sim.in_flight.values())}
        out = {k: v for k, v in left.items() if v}
        out.update({f"{m} (waiting, running)": c for m, c in per_model.items()})
        return out

    try:
        wait_for(lambda: not stack.run(counts), timeout=15, interval=0.02)
    except AssertionError:
        return json.dumps(stack.run(counts))
    return ""


def run_row(row: Row, repeat: int) -> Row:
    for mode in MODES:
        outcomes: list[str] = []
        cell = Cell()
        for _ in range(repeat):
            # The simulator's own warnings (the faults it was told to make) would drown the report.
            stack = Stack(override(), sim_kw={"log": Logger("error"), **(SLOW_SIM if row.slow else {})}).start()
            try:
                if row.reboot_down:
                    reboot_router(stack)
                with RuntimePoller(stack) as poller:
                    if row.setup:
                        row.setup(stack)
                    result: dict[str, str] = {}
                    worker = threading.Thread(target=lambda: result.update(outcome=request(stack, mode)))
                    worker.start()
                    if row.during:
                        row.during(stack, mode)
                    worker.join(60)
                    outcomes.append(result.get("outcome", "no answer within 60 s"))
                    if row.clear:
                        row.clear(stack)
                    cell.leaks = cell.leaks or leaks(stack)
                    cell.recovered = request(stack, "sync").startswith("200")
                cell.runtime_max_ms = max(cell.runtime_max_ms, poller.worst * 1000)
                if poller.errors:
                    cell.leaks += f" runtime errors: {poller.errors[:2]}"
            finally:
                stack.stop()
        cell.outcome = " / ".join(sorted(set(outcomes)))
        cell.ok = all(o in row.expect[mode] for o in outcomes) and not cell.leaks and cell.recovered
        row.cells[mode] = cell
    return row


def run(repeat: int = 1) -> list[Row]:
    return [run_row(make(), repeat) for make in ROWS]


def report(rows: list[Row]) -> str:
    table = []
    for row in rows:
        cells = [row.cells[m] for m in MODES]
        table.append([row.name] + [("" if c.ok else "**WRONG** ") + c.outcome for c in cells]
                     + ["none" if not any(c.leaks for c in cells) else "; ".join(c.leaks for c in cells if c.leaks),
                        f"{max(c.runtime_max_ms for c in cells):.0f}",
                        "yes" if all(c.recovered for c in cells) else "no"])
    bad = [(r.name, m) for r in rows for m in MODES if not r.cells[m].ok]
    return "\n".join([
        drillkit.md_table(["fault", "sync", "stream", "async", "left behind", "runtime worst ms", "recovers"], table),
        f"cells: {len(rows) * len(MODES)}, wrong: {len(bad)} {bad if bad else ''}", drillkit.machine()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="requests per cell, each on a fresh stack")
    args = ap.parse_args(argv)
    rows = run(args.repeat)
    print(report(rows))
    return 0 if all(c.ok for r in rows for c in r.cells.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
