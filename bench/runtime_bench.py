"""Benchmark: Kong's snapshot call and a Prometheus scrape, measured the way Kong and Prometheus see them.

The router and the simulator run in a child process (as a real node would, apart from its client);
this process is the client, on one keep-alive connection, like Kong's HTTP pool.

* ``/v1/router/runtime`` latency while the simulator's ``/api/ps`` hangs (target p99 < 5 ms);
* ``/metrics`` scrape time with 50 configured models, every per-model series filled and changed between
  two scrapes (target < 5 ms).

Run: ``python bench/runtime_bench.py [--requests 2000] [--models 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time


def bench_config(models: int) -> dict:
    names = [f"bench-model-{i:02d}:7b" for i in range(models)]
    return {
        "server": {"nodeId": "bench", "host": "127.0.0.1", "port": 11435, "requestBodyLimit": "2mb"},
        "ollama": {"baseUrl": "http://127.0.0.1:9", "requestTimeoutMs": 10000, "pollIntervalMs": 1000},
        "gpu": {"provider": "nvidia", "name": "Simulated GPU", "vramTotalMb": 143771, "vramSafetyReserveMb": 512,
                "maxGpuUtilizationPct": 95, "monitor": {"enabled": True, "intervalMs": 1000}},
        "router": {"defaultMode": "auto", "syncMaxQueueTimeMs": 5000, "heavyLoadQueueDepth": 5,
                   "heavyLoadGpuFreeMbThreshold": 1024, "defaultTaskType": "unknown",
                   "classification": {"mode": "heuristic", "classifierTimeoutMs": 1000}},
        "jobs": {"resultTtlSeconds": 3600, "maxAttempts": 1, "cleanupIntervalMs": 1000},
        "models": [{"name": n, "sizeGb": 4.7, "purpose": ["code_generate", "simple_chat"], "priority": 50,
                    "maxConcurrent": 2, "defaultContext": 8192, "maxContext": 32768, "timeoutMs": 10000,
                    "costClass": "medium", "allowWhenBusy": True} for n in names],
        "routes": {"code_generate": names[:3], "simple_chat": names[:2], "unknown": names[:1]},
        "queue": {"globalMaxConcurrent": 8, "globalMaxQueued": 100, "perUserMaxQueued": 50,
                  "defaultPriority": "normal", "timeoutMs": 10000},
    }


async def serve(models: int) -> None:
    """The child: simulator (its /api/ps hung) + router, with every per-model metric series populated."""
    import dataclasses

    from ollama_agent_router.api.kong import runtime_body
    from ollama_agent_router.api.status import StatusRoutes
    from ollama_agent_router.app import App
    from ollama_agent_router.config.parse import parse_config
    from ollama_agent_router.jsonutil import dumps
    from ollama_agent_router.log import Logger
    from ollama_agent_router.simulator.run import Fault
    from ollama_agent_router.simulator.server import OllamaSimulator

    cfg = parse_config(bench_config(models))
    sim = OllamaSimulator.from_config(cfg, log=Logger("error"))
    await sim.start()
    cfg = dataclasses.replace(cfg, ollama=dataclasses.replace(cfg.ollama, base_url=sim.url))
    app = App(cfg, log=Logger("error"), gpu_backend=sim.gpu_backend())
    port = await app.start("127.0.0.1", 0)
    m = app.metrics
    state = StatusRoutes(app.cfg, app.scheduler, app.snapshot, app.jobs, m, app.sessions)
    for i, name in enumerate(app.table.order):
        for status in ("200", "502"):
            m.requests.inc("standalone", "code_generate", name, "sync", status)
        m.requests.inc("runtimeAgent", "simple_chat", name, "stream", "200")
        m.upstream_errors.inc(name, "timeout")
        m.request_seconds.observe(0.5 + i / 100, name)
        m.queue_seconds.observe(0.001 * i, name)
        m.ttft_seconds.observe(0.05, name)
        m.tokens_per_second.observe(40 + i, name)
    m.decision_seconds.observe(0.0001)

    def touch_all() -> None:
        # Every per-model series changes between two scrapes: the scrape's worst case, no cached text.
        for name in app.table.order:
            for h in (m.request_seconds, m.queue_seconds, m.ttft_seconds, m.tokens_per_second):
                h.observe(0.01, name)

    async def churn() -> None:
        while True:
            touch_all()
            await asyncio.sleep(0.002)

    churner = asyncio.get_running_loop().create_task(churn())
    sim.inject("/api/ps", Fault(first_byte_delay_s=3600, times=None))  # hangs like a 2026 Ollama mid-load
    cpu = 0.0
    for _ in range(200):
        touch_all()
        t0 = time.process_time()
        state.metrics_text()
        cpu += time.process_time() - t0
    render_ms = cpu / 200 * 1000  # CPU time: what one scrape costs the node, whatever else runs on the box
    t0 = time.process_time()
    for _ in range(1000):
        dumps(runtime_body(app.cfg, app.snapshot, app.scheduler, app.jobs))
    snapshot_ms = (time.process_time() - t0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"port": port, "renderMs": render_ms, "snapshotMs": snapshot_ms}), flush=True)
    await stop.wait()
    churner.cancel()
    await app.stop(1.0)
    await sim.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed_gets(port: int, path: str, n: int) -> tuple[list[float], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json", "accept": "application/json"}  # as Kong sends them
    samples = []
    body = b""
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200, (path, resp.status, body[:200])
    conn.close()
    return samples, body


def report(name: str, samples: list[float]) -> str:
    return (f"{name:<34} n={len(samples):<5} p50={statistics.median(samples):.3f} ms  "
            f"p99={percentile(samples, 99):.3f} ms  max={max(samples):.3f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.models))
        return 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--models", str(args.models)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(child.stdout.readline())
        port = info["port"]
        timed_gets(port, "/v1/router/runtime", 50)  # warm-up
        runtime, body = timed_gets(port, "/v1/router/runtime", args.requests)
        snapshot = json.loads(body)
        scrapes, text = timed_gets(port, "/metrics", max(200, args.requests // 10))
        load = os.getloadavg()[0]
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.2f}; {args.models} models")
        print(report("/v1/router/runtime (ps hung)", runtime))
        print(f"{'':<34} status={snapshot['status']} snapshotAgeMs={snapshot['snapshotAgeMs']}; "
              f"body CPU {info['snapshotMs']:.3f} ms")
        print(report(f"/metrics ({args.models} models)", scrapes))
        lines = text.count(b"\n")
        print(f"{'':<34} {len(text)} bytes, {lines} lines; render CPU {info['renderMs']:.3f} ms")
    finally:
        child.terminate()
        child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
