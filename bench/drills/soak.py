"""Soak: a steady mixed load for 10 minutes, on loopback, bounded in count and time.

    python bench/drills/soak.py [--seconds 600]

The real router process (access on, a rate-limited key, a small job retention) in front of the simulator
(on its own thread here, about 50 ms a reply). Clients, each a closed loop over keep-alive connections:

- 3 sync chat clients (mixed task types, so several models), 2 streaming clients of which every
  fourth stream is dropped by the client after its first chunk, 1 async client (submit, then poll the
  result), 1 client with a key limited to 5 requests/s sending 20/s, and 1 poller of
  ``/v1/router/runtime`` and ``/metrics``.

Every answer is classified: fine (200, 202), intended (429 from the rate limit or a queue limit, 503
refusals such as a queue timeout), or unexpected (anything else, including a cut connection the client
did not cause). The router's RSS and open file descriptors are sampled every second and sync latency is
kept per window (a tenth of the run).

Figures: RSS after the first window stays within +-10% of the second window's; the most descriptors open
at once in a window stays within +10% (at least +2) of the second window's most. The fewest swing by 3 to
5 from one second to the next as clients drop streams and reconnect, so only the ceiling shows a leak,
which raises it for good. No unexpected answer; sync p99 per window stays within twice the second
window's (plus 50 ms of scheduling noise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import drillkit
from drillkit import TEST_CONFIG, RouterProcess, SimThread, merge, percentile

from ollama_agent_router.access.keys import generate_key

LIMITED_KEY, LIMITED_HASH = generate_key()
INTENDED = {429: {"rate_limit_exceeded", "queue_full", "user_queue_full", "global_queue_full"},
            503: {"queue_timeout", "upstream_busy", "no_model_available"}}
PROMPTS = ["Hello there", "Write a Python function to parse JSON", "Review this code ```x = 1```",
           "Summarize this paragraph about birds"]


def router_config(sim_url: str) -> dict:
    return merge(TEST_CONFIG, {
        "server": {"idleTimeoutMs": 5000},
        "ollama": {"baseUrl": sim_url},
        "router": {"syncMaxQueueTimeMs": 3000},
        "queue": {"globalMaxQueued": 100, "perUserMaxQueued": 100},
        "jobs": {"maxRetainedJobs": 300, "resultTtlSeconds": 20, "cleanupIntervalMs": 1000},
        "access": {"managed": {
            "planes": {"standalone": {"auth": {"requireApiKey": False, "anonymous": "allow"}},
                       "runtimeAgent": {"auth": {"requireApiKey": False, "anonymous": "allow"}}},
            "apiKeys": [{"id": "limited", "keyHash": LIMITED_HASH, "scopes": ["standalone"],
                         "limits": {"standalone": {"requests": 5, "windowSeconds": 1}}}],
        }},
    })


# ---- a small keep-alive client ------------------------------------------------------------------------------

class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                      drop_after_first_chunk: bool = False) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(head.encode() + b"\r\n" + data)
        reader = self.reader
        assert reader is not None
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "chunked" in hdrs.get("transfer-encoding", ""):
            out = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                out += (await reader.readexactly(size + 2))[:-2]
                if drop_after_first_chunk:
                    self.close()
                    return status, bytes(out)
            body_bytes = bytes(out)
        else:
            body_bytes = await reader.readexactly(int(hdrs.get("content-length", "0")))
        if "close" in hdrs.get("connection", ""):
            self.close()
        return status, body_bytes

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Window:
    started: float
    answers: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    sync_latency: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


class Soak:
    def __init__(self, port: int, seconds: float, windows: int = 10) -> None:
        self.port = port
        self.seconds = seconds
        self.window_s = seconds / windows
        self.windows: list[Window] = []
        self.t0 = 0.0
        self.dropped_streams = 0

    @property
    def window(self) -> Window:
        i = min(int((time.monotonic() - self.t0) / self.window_s), round(self.seconds / self.window_s) - 1)
        while len(self.windows) <= i:
            self.windows.append(Window(self.t0 + len(self.windows) * self.window_s))
        return self.windows[i]

    def running(self) -> bool:
        return time.monotonic() - self.t0 < self.seconds

    def judge(self, kind: str, status: int, body: bytes) -> None:
        w = self.window
        if status in (200, 202):
            w.answers[f"{kind} {status}"] += 1
            return
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        if code in INTENDED.get(status, ()):
            w.answers[f"{kind} {status} {code}"] += 1
        else:
            w.unexpected.append(f"{kind}: {status} {code} {body[:200]!r}")

    async def guarded(self, kind: str, conn: Conn, coro: Any) -> None:
        try:
            await coro
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            conn.close()
            self.window.unexpected.append(f"{kind}: {type(e).__name__}: {e}")

    # ---- the clients ----
    async def repeat(self, kind: str, pause: float, step: Callable[[Conn, int], Awaitable[None]]) -> None:
        """One client: ``step`` (the n-th exchange) on a keep-alive connection, then a pause, until the end."""
        conn = Conn(self.port)
        n = 0
        while self.running():
            n += 1
            await self.guarded(kind, conn, step(conn, n))
            await asyncio.sleep(pause)
        conn.close()

    async def sync_client(self, i: int) -> None:
        async def one(conn: Conn, n: int) -> None:
            body = {"model": "auto", "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}],
                    "router": {"allowAsync": False}}
            started = time.monotonic()
            status, data = await conn.request("POST", "/v1/chat/completions", body)
            if status == 200:
                self.window.sync_latency.append(time.monotonic() - started)
            self.judge("sync", status, data)

        await self.repeat("sync", 0.05, one)

    async def stream_client(self, i: int) -> None:
        async def one(conn: Conn, n: int) -> None:
            drop = n % 4 == 0
            body = {"model": "auto", "stream": True,
                    "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}]}
            status, data = await conn.request("POST", "/v1/chat/completions", body, drop_after_first_chunk=drop)
            if drop and status == 200:
                self.dropped_streams += 1
                self.window.answers["stream dropped by the client"] += 1
                return
            if status == 200 and not data.rstrip().endswith(b"data: [DONE]"):
                self.window.unexpected.append(f"stream without [DONE]: {data[-200:]!r}")
                return
            self.judge("stream", status, data)

        await self.repeat("stream", 0.05, one)

    async def async_client(self) -> None:
        async def one(conn: Conn, n: int) -> None:
            status, data = await conn.request("POST", "/v1/chat/completions", {
                "model": "auto", "messages": [{"role": "user", "content": "Hello there"}],
                "router": {"mode": "async"}})
            self.judge("async submit", status, data)
            if status != 202:
                return
            job = json.loads(data)["id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, data = await conn.request("GET", f"/v1/jobs/{job}/result")
                if status != 202:
                    self.judge("async result", status, data)
                    return
                await asyncio.sleep(0.1)
            self.window.unexpected.append(f"job {job} not done after 30 s")

        await self.repeat("async", 0.2, one)

    async def limited_client(self) -> None:
        async def one(conn: Conn, n: int) -> None:
            status, data = await conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {LIMITED_KEY}"})
            self.judge("limited key", status, data)

        await self.repeat("limited key", 0.05, one)

    async def poller(self) -> None:
        async def one(conn: Conn, n: int) -> None:
            path = "/metrics" if n % 4 == 0 else "/v1/router/runtime"
            status, data = await conn.request("GET", path)
            self.judge(path, status, data)

        await self.repeat("runtime and metrics poller", 0.5, one)

    async def sampler(self, router: RouterProcess) -> None:
        while self.running():
            w = self.window
            w.rss_kb.append(router.rss_kb())
            w.fds.append(router.fds())
            await asyncio.sleep(1.0)

    async def run(self, router: RouterProcess) -> None:
        self.t0 = time.monotonic()
        await asyncio.gather(
            *(self.sync_client(i) for i in range(3)), *(self.stream_client(i) for i in range(2)),
            self.async_client(), self.limited_client(), self.poller(), self.sampler(router))


def judge_run(soak: Soak) -> dict:
    ws = soak.windows
    base = ws[1] if len(ws) > 1 else ws[0]
    later = ws[1:] or ws
    rss_base, fds_base = max(base.rss_kb), max(base.fds)
    p99 = [percentile(w.sync_latency, 99) for w in ws]
    failures = []
    for i, w in enumerate(later, start=1):
        if abs(max(w.rss_kb) - rss_base) > 0.10 * rss_base:
            failures.append(f"window {i}: RSS {max(w.rss_kb)} kB vs {rss_base} kB in window 1")
        if max(w.fds) - fds_base > max(0.10 * fds_base, 2):
            failures.append(f"window {i}: up to {max(w.fds)} open fds vs {fds_base} in window 1")
        if p99[i] > 2 * p99[1] + 0.05:
            failures.append(f"window {i}: sync p99 {p99[i] * 1000:.0f} ms vs {p99[1] * 1000:.0f} ms in window 1")
    unexpected = [u for w in ws for u in w.unexpected]
    if unexpected:
        failures.append(f"{len(unexpected)} unexpected answers, e.g. {unexpected[:3]}")
    totals = Counter()
    for w in ws:
        totals.update(w.answers)
    return {"windows": ws, "p99": p99, "failures": failures, "totals": totals, "unexpected": len(unexpected)}


def run(seconds: float, tmp: Path) -> tuple[Soak, dict, dict]:
    sim = SimThread(tokens_per_second=200, reply_tokens=10, num_parallel=4)
    router = RouterProcess(tmp, router_config(sim.url)).start()
    soak = Soak(router.port, seconds)
    try:
        asyncio.run(soak.run(router))
        end = {"rss_kb": router.rss_kb(), "fds": router.fds(), "alive": router.alive()}
    finally:
        router.stop()
        sim.stop()
    return soak, judge_run(soak), end


def report(soak: Soak, j: dict, end: dict) -> str:
    rows = []
    for i, w in enumerate(j["windows"]):
        rows.append([i, f"{w.started - soak.t0:.0f}", sum(w.answers.values()), len(w.unexpected),
                     len(w.sync_latency), f"{percentile(w.sync_latency, 50) * 1000:.0f}",
                     f"{j['p99'][i] * 1000:.0f}", max(w.rss_kb) if w.rss_kb else "-",
                     f"{min(w.fds)}–{max(w.fds)}" if w.fds else "-"])
    total = sum(j["totals"].values())
    return "\n".join([
        f"soak {soak.seconds:.0f} s; answers {total:,}; unexpected {j['unexpected']}; streams dropped by clients "
        f"{soak.dropped_streams}; router alive at the end {end['alive']}",
        drillkit.md_table(["window", "from s", "answers", "unexpected", "sync ok", "sync p50 ms", "sync p99 ms",
                           "RSS kB (max)", "fds (min–max)"], rows),
        "answers by kind: " + ", ".join(f"{k}: {v}" for k, v in sorted(j["totals"].items())),
        drillkit.machine(),
    ] + [f"FAIL {f}" for f in j["failures"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        soak, j, end = run(args.seconds, Path(tmp))
    print(report(soak, j, end))
    return 1 if j["failures"] or not end["alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
