"""Enqueue 10,000 async jobs: the cost of ``JobManager.submit`` and the memory each queued job holds.

    python bench/jobs_bench.py [--jobs 10000] [--http 2000]

For each store (memory, sqlite in a temporary directory) the model the jobs go to is held busy, so every
job stays queued: what is measured is accepting and holding a job, not running it.

- submit: wall time per ``submit`` (p50, p99, mean), without tracemalloc;
- memory: tracemalloc growth over the 10,000 submits, per job, minus the request body's own JSON string
  (the part of a job that is the client's, not the router's);
- http: sequential ``POST /v1/chat/completions`` with ``router.mode: async`` over one keep-alive connection,
  client and router on the same loop (so the figure includes the client's own cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from conftest import QWEN, make_config

from ollama_agent_router.app import App
from ollama_agent_router.log import Logger

BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a careful senior engineer. Answer with code only."},
        {"role": "user", "content": "Write a TypeScript function that parses an ISO-8601 duration such as PT1H30M "
                                    "into seconds, with tests."},
    ],
    "temperature": 0.2,
    "router": {"mode": "async", "priority": "normal"},
}


def config(store: str, path: str | None):
    jobs = {"store": store, "maxRetainedJobs": 100_000}
    if path:
        jobs["sqlitePath"] = path
        for suffix in ("", "-wal", "-shm"):  # every run starts from an empty database
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    return make_config({"jobs": jobs, "queue": {"globalMaxQueued": 1_000_000, "perUserMaxQueued": 1_000_000},
                        "ollama": {"baseUrl": "http://127.0.0.1:9"}})


async def submit_all(app: App, n: int, timed: bool) -> list[float]:
    jobs = app.jobs
    durations = []
    for i in range(n):
        t0 = time.perf_counter()
        jobs.submit(BODY, QWEN, "code_generate", "normal", f"ip:10.0.{i % 200}.1")
        if timed:
            durations.append(time.perf_counter() - t0)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let batched store writes run, as they would between requests
    return durations


async def run_store(store: str, n: int, path: str | None) -> dict:
    out: dict = {"store": store, "jobs": n}
    body_bytes = len(json.dumps(BODY, separators=(",", ":")))
    # Timing run.
    app = App(config(store, path), log=Logger("error"))
    app.jobs.start()
    hold = app.scheduler.try_acquire(QWEN)
    t0 = time.perf_counter()
    durations = await submit_all(app, n, timed=True)
    total = time.perf_counter() - t0
    assert app.scheduler.counts(QWEN) == (n, 1)
    durations.sort()
    out.update(total_s=round(total, 3), per_job_us_mean=round(total / n * 1e6, 1),
               p50_us=round(durations[n // 2] * 1e6, 1), p99_us=round(durations[int(n * 0.99)] * 1e6, 1))
    hold.release()
    await app.jobs.stop(0)
    if path:
        out["sqlite_bytes_per_job"] = round(sum(os.path.getsize(p) for p in (path, path + "-wal")
                                                if os.path.exists(p)) / n)
    # Memory run.
    app = App(config(store, path), log=Logger("error"))
    app.jobs.start()
    hold = app.scheduler.try_acquire(QWEN)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    await submit_all(app, n, timed=False)
    await asyncio.sleep(0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    request_str = sys.getsizeof("x" * body_bytes)  # the stored request_json string
    out.update(body_bytes=body_bytes, bytes_per_job=round(grown / n),
               bytes_per_job_beyond_body=round(grown / n - request_str))
    hold.release()
    await app.jobs.stop(0)
    return out


async def run_http(store: str, n: int, path: str | None) -> dict:
    app = App(config(store, path), log=Logger("error"))
    app.jobs.start()
    port = await app.server.listen("127.0.0.1", 0)
    hold = app.scheduler.try_acquire(QWEN)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(dict(BODY, router={"mode": "async", "preferredModels": [QWEN]})).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    t0 = time.perf_counter()
    for _ in range(n):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202"), head[:80]
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
    total = time.perf_counter() - t0
    writer.close()
    hold.release()
    await app.jobs.stop(0)
    await app.server.shutdown(0)
    return {"store": store, "http_requests": n, "per_request_us": round(total / n * 1e6, 1),
            "requests_per_s": round(n / total)}


async def main(n: int, http_n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "jobs.sqlite")
        for store, p in (("memory", None), ("sqlite", path)):
            print(json.dumps(await run_store(store, n, p)), flush=True)
        for store, p in (("memory", None), ("sqlite", path)):
            if http_n:
                print(json.dumps(await run_http(store, http_n, p)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--http", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.http))
