"""Pipeline flood: one client pipelines megabytes of ``GET /health`` and never reads an answer.

    python bench/drills/pipeline_flood.py [--quick]

The real router process (``serve --simulate``; ``/health`` is served by the full app). A probe client
first measures ``GET /health`` on its own keep-alive connection with the router idle; then the flood
client sends up to ``--megabytes`` of pipelined requests as fast as the router takes them, reading
nothing, while the probe keeps measuring and the router's RSS and CPU time are sampled.

A router that reads and answers without limit buffers every answer it cannot send (RSS grows with the
flood) and spends its CPU on the flood while the probe waits. Figures to reach: RSS grows by less than
10 MB, and the probe's p50 during the flood stays within twice its idle p50 (plus a small absolute slack
for the scheduling noise of a shared machine). The router must answer normally once the flood ends.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import drillkit
from drillkit import TEST_CONFIG, RouterProcess, merge, percentile

REQUEST = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
RSS_GROWTH_LIMIT_KB = 10 * 1024


@dataclass
class Config:
    megabytes: int
    seconds: float  # the flood stops after this long, sent in full or not
    probes_idle: int
    p50_slack_ms: float  # absolute noise allowance on top of twice the idle p50


FULL = Config(megabytes=64, seconds=20.0, probes_idle=300, p50_slack_ms=0.0)
QUICK = Config(megabytes=16, seconds=6.0, probes_idle=150, p50_slack_ms=1.0)


def router_config() -> dict:
    return merge(TEST_CONFIG, {"server": {"host": "127.0.0.1", "idleTimeoutMs": 60_000}})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (100 a second on Linux)


class Probe:
    """``GET /health`` on one keep-alive connection, one at a time; records each latency."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def once(self) -> None:
        started = time.perf_counter()
        try:
            self.sock.sendall(REQUEST)
            buf = b""
            while True:
                buf += self.sock.recv(65536)
                parsed = drillkit.parse_response(buf)
                if parsed is not None:
                    break
            if parsed[0].status != 200:
                self.errors.append(f"status {parsed[0].status}")
        except (OSError, ValueError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return
        self.latencies.append(time.perf_counter() - started)

    def close(self) -> None:
        self.sock.close()


def flood(port: int, megabytes: int, seconds: float, sent: list[int], stop: threading.Event) -> None:
    """Send pipelined requests until ``megabytes`` are out, ``seconds`` pass or ``stop``; never read."""
    block = REQUEST * (64 * 1024 // len(REQUEST))
    total = megabytes * 1024 * 1024
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.2)
        while sent[0] < total and time.monotonic() < deadline and not stop.is_set():
            try:
                sent[0] += sock.send(block)
            except socket.timeout:
                continue  # the router stopped reading: keep the pressure on until the deadline
            except OSError:
                break  # the router cut the connection
        stop.wait(max(0.0, deadline - time.monotonic()))  # hold the connection (unread answers and all)


def paced(probe: Probe, router: RouterProcess, more: Callable[[], bool]) -> int:
    """Probe every 10 ms while ``more()``, sampling the router's RSS; returns the highest seen. Idle and
    flood are measured at the same pace: a router woken every 10 ms answers slower than one kept busy."""
    rss_peak = 0
    while more():
        probe.once()
        rss_peak = max(rss_peak, router.rss_kb())
        time.sleep(0.01)
    return rss_peak


def run(c: Config, workdir: Path) -> dict:
    router = RouterProcess(workdir, router_config(), simulate=True).start()
    try:
        probe = Probe(router.port)
        for _ in range(20):  # warm up
            probe.once()
        probe.latencies.clear()
        rss_before = router.rss_kb()
        rss_peak = paced(probe, router, lambda: len(probe.latencies) < c.probes_idle)
        idle = list(probe.latencies)
        probe.latencies.clear()
        cpu_before = cpu_seconds(router.pid)
        sent, stop = [0], threading.Event()
        sender = threading.Thread(target=flood, args=(router.port, c.megabytes, c.seconds, sent, stop))
        started = time.monotonic()
        sender.start()
        rss_peak = max(rss_peak, paced(probe, router, sender.is_alive))
        flood_s = time.monotonic() - started
        cpu_flood = cpu_seconds(router.pid) - cpu_before
        during = list(probe.latencies)
        probe.close()
        serving = drillkit.call(router.port, "GET", "/health", timeout=10)[0] == 200
        out = {"sent_mb": round(sent[0] / 2**20, 1), "flood_s": round(flood_s, 1), "cpu_s": round(cpu_flood, 1),
               "rss_before_kb": rss_before, "rss_peak_kb": rss_peak, "rss_after_kb": router.rss_kb(),
               "idle_p50_ms": round(percentile(idle, 50) * 1000, 2),
               "flood_p50_ms": round(percentile(during, 50) * 1000, 2),
               "flood_p99_ms": round(percentile(during, 99) * 1000, 2), "probes": len(during),
               "probe_errors": probe.errors[:5], "serving_after": serving, "alive": router.alive()}
    finally:
        router.stop()
    out["failures"] = judge(out, c)
    return out


def judge(out: dict, c: Config) -> list[str]:
    failures = []
    if out["rss_peak_kb"] - out["rss_before_kb"] >= RSS_GROWTH_LIMIT_KB:
        failures.append(f"router RSS grew {out['rss_peak_kb'] - out['rss_before_kb']} kB under the flood "
                        f"(limit {RSS_GROWTH_LIMIT_KB} kB)")
    if out["flood_p50_ms"] > 2 * out["idle_p50_ms"] + c.p50_slack_ms:
        failures.append(f"probe p50 {out['flood_p50_ms']} ms during the flood, {out['idle_p50_ms']} ms idle")
    if out["probe_errors"] or not out["serving_after"] or not out["alive"]:
        failures.append(f"probe errors {out['probe_errors']}, serving after: {out['serving_after']}")
    return failures


def report(out: dict, c: Config) -> str:
    lines = [drillkit.md_table(
        ["flood sent", "flood s", "router CPU s", "RSS kB before / peak / after", "probe p50 idle / flood ms",
         "probe p99 flood ms", "probes"],
        [[f"{out['sent_mb']} of {c.megabytes} MB", out["flood_s"], out["cpu_s"],
          f"{out['rss_before_kb']} / {out['rss_peak_kb']} / {out['rss_after_kb']}",
          f"{out['idle_p50_ms']} / {out['flood_p50_ms']}", out["flood_p99_ms"], out["probes"]]])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return drillkit.sized_main(__doc__, FULL, QUICK, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
