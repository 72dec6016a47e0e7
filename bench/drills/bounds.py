"""Bounds under hostile load (issue 15): what a client or an upstream controls must not cost unbounded
memory, nor hold the event loop.

    python bench/drills/bounds.py [--quick] [--stall-ms 50]

Real router processes, each with asyncio's debug mode on and its slow-callback log at 50 ms (a
``sitecustomize`` in the drill's directory sets the loop policy), so every callback that holds the loop
longer is written to the router's log with its duration. Each attack reads the log from its own start:
"longest stall" is the longest callback the log reported (0 when none passed 50 ms). A thread polls
``GET /health`` meanwhile (its p50 is "other clients"). Ollama is the simulator on a thread of this
process, or a scripted raw upstream (``tests/bounds_support.RawUpstream``) for the upstream attacks.

The same script runs against older code (``PYTHONPATH=<checkout> python bench/drills/bounds.py``): keys
that code does not know are ignored, so the "before" figures come from the same attacks.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import drillkit
from drillkit import TEST_CONFIG, LoopThread, RouterProcess, SimThread, call, md_table, merge, percentile

from ollama_agent_router.access.keys import generate_key, hash_key

ADMIN_KEY, ADMIN_HASH = generate_key()
PASSWORD = "correct horse battery staple"
SLOW = re.compile(r"Executing .* took (\d+\.\d+) seconds")
POLICY = """import asyncio

class _SlowCallbackLog(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        return loop

asyncio.set_event_loop_policy(_SlowCallbackLog())
"""


@dataclass
class Sizes:
    wide_mb: int = 8  # the JSON bomb and the escape-heavy body
    kdf_keys: int = 10  # wrong keys per address, 3 addresses
    jobs: int = 40  # jobs of 8 MB from one caller
    admin_keys: int = 20_000  # keys in the large admin PUT
    stall_ms: float = 50.0  # the longest callback a fixed attack may cost

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(wide_mb=4, kdf_keys=3, jobs=10, admin_keys=20_000, stall_ms=250.0)


@dataclass
class Row:
    item: str
    attack: str
    outcome: str
    stall_ms: float
    others: str
    ok: bool


class Router:
    """A router process with its slow-callback log, and a /health poller for "other clients"."""

    def __init__(self, workdir: Path, raw_config: dict) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = RouterProcess(workdir, raw_config)
        self.port = self.proc.port
        self._mark = 0

    def start(self) -> "Router":
        self.proc.start(timeout=60)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def measure(self, attack: Callable[[], Any]) -> tuple[Any, float, str]:
        """Run ``attack``; its result, the longest stall logged meanwhile (ms), other clients' /health p50."""
        self._mark = len(self.proc.log_text())
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                t = time.perf_counter()
                try:
                    call(self.port, "GET", "/health", headers={"host": "localhost"}, timeout=30)
                    latencies.append(time.perf_counter() - t)
                except OSError:
                    pass
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            result = attack()
        finally:
            done.set()
            poller.join(60)
        stalls = [float(m) for m in SLOW.findall(self.proc.log_text()[self._mark:])]
        others = f"p50 {percentile(latencies, 50) * 1000:.0f} ms, max {max(latencies, default=0) * 1000:.0f} ms"
        return result, max(stalls, default=0.0) * 1000, others


def send(port: int, method: str, path: str, body: bytes | None, headers: dict | None = None,
         source: str = "127.0.0.1", timeout: float = 120) -> tuple[int, bytes, float]:
    """One request on a fresh connection: status, body, seconds."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"host": "localhost", "content-type": "application/json",
                                                       **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.perf_counter() - t
    finally:
        conn.close()


def code_of(body: bytes) -> str:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""


# ---- the main router: bodies, key derivation, rebinding, job budget, admin PUT --------------------------------

def main_config(sim_url: str, workdir: Path) -> dict:
    plane = {"enabled": True, "auth": {"requireApiKey": False, "anonymous": "allow"}}
    # Models that hold any prompt: the bodies here are sized to stress parsing and storage, and the context
    # check would otherwise refuse them (503) before they reach what this drill measures.
    models = [dict(m, maxContext=10_000_000) for m in TEST_CONFIG["models"]]
    return merge(TEST_CONFIG, {
        "models": models,
        "server": {"requestBodyLimit": "8mb"},
        "ollama": {"baseUrl": sim_url},
        "queue": {"globalMaxQueued": 500, "perUserMaxQueued": 500},
        "jobs": {"maxRetainedJobs": 1000},
        "access": {
            "managedConfigPath": str(workdir / "access.yaml"),
            "managed": {"planes": {"standalone": plane, "runtimeAgent": plane},
                        "apiKeys": [{"id": "human", "keyHash": hash_key(PASSWORD, "pbkdf2-sha256"),
                                     "scopes": ["standalone"]}]},
            "admin": {"enabled": True, "apiKeyHashes": [{"id": "ops", "hash": ADMIN_HASH}],
                      "auditLogPath": str(workdir / "audit.jsonl")},
        },
    })


def chat_bytes(content: str = "hi", extra: str = "", **router: Any) -> bytes:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    if router:
        body["router"] = router
    return json.dumps(body).encode()[:-1] + extra.encode() + b"}"


def attack_bodies(r: Router, sizes: Sizes) -> list[Row]:
    n = sizes.wide_mb << 20
    wide = chat_bytes(extra=',"x":[' + ",".join(["[]"] * ((n - 1024) // 3)) + "]")  # under the body limit
    (status, body, took), stall, others = r.measure(lambda: send(r.port, "POST", "/v1/chat/completions", wide))
    rows = [Row("4", f"{len(wide) / 1e6:.1f} MB of `[],[],…` to /v1/chat/completions",
                f"{status} {code_of(body)} in {took * 1000:.0f} ms", stall, others,
                status == 400 and stall <= sizes.stall_ms)]
    nasty = chat_bytes('hello, "world". \\ ' * (n // 24))
    (status, body, took), stall, others = r.measure(lambda: send(r.port, "POST", "/v1/chat/completions", nasty))
    rows.append(Row("4", f"{len(nasty) / 1e6:.1f} MB of escape-heavy text in one message",
                    f"{status} in {took * 1000:.0f} ms", stall, others, status == 200 and stall <= sizes.stall_ms))
    long = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"message {i}"}
                                                      for i in range(20_000)]}).encode()
    (status, body, took), stall, others = r.measure(lambda: send(r.port, "POST", "/v1/chat/completions", long))
    rows.append(Row("4", "a 20,000-message conversation", f"{status} in {took * 1000:.0f} ms", stall, others,
                    status == 200 and stall <= sizes.stall_ms))
    return rows


def attack_kdf(r: Router, sizes: Sizes) -> Row:
    def wrong_keys() -> list[int]:
        statuses: list[int] = []

        def address(i: int) -> None:
            for k in range(sizes.kdf_keys):
                statuses.append(send(r.port, "POST", "/v1/chat/completions", chat_bytes(),
                                     {"authorization": f"Bearer wrong password {i}-{k}"}, f"127.0.0.{2 + i}")[0])

        threads = [threading.Thread(target=address, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        return statuses

    t = time.perf_counter()
    statuses, stall, others = r.measure(wrong_keys)
    took = time.perf_counter() - t
    right = send(r.port, "POST", "/v1/chat/completions", chat_bytes(), {"authorization": f"Bearer {PASSWORD}"})[0]
    counts = ", ".join(f"{statuses.count(s)}x {s}" for s in sorted(set(statuses)))
    return Row("6", f"{3 * sizes.kdf_keys} wrong keys against a pbkdf2 key, from 3 addresses at once",
               f"{counts} in {took:.1f} s; the right key {right}", stall, others,
               right == 200 and set(statuses) <= {401, 429} and stall <= sizes.stall_ms)


def attack_rebinding(r: Router) -> Row:
    send(r.port, "POST", "/v1/chat/completions", chat_bytes("the secret prompt", mode="async"))
    (status, body, _), stall, others = r.measure(
        lambda: send(r.port, "GET", "/v1/jobs", None, {"host": "rebind.attacker.example"}))
    leaked = b"the secret prompt" in body
    return Row("7", "`GET /v1/jobs` with `Host: rebind.attacker.example`, no Origin",
               f"{status} {code_of(body)}; prompt {'read' if leaked else 'not read'}", stall, others,
               status == 403 and not leaked)


def attack_jobs(r: Router, sizes: Sizes) -> list[Row]:
    big = chat_bytes("y" * ((8 << 20) - 1024), mode="async")  # just under the 8 MiB body limit
    rss = r.proc.rss_kb()

    def submit_all() -> list[tuple[int, str]]:
        return [(s, code_of(b)) for s, b, _ in (send(r.port, "POST", "/v1/chat/completions", big)
                                              for _ in range(sizes.jobs))]

    answers, stall, others = r.measure(submit_all)
    grown = (r.proc.rss_kb() - rss) / 1024
    accepted = sum(1 for s, _ in answers if s == 202)
    refused = sum(1 for s, c in answers if s == 429 and c == "job_storage_full")
    rows = [Row("2", f"{sizes.jobs} async jobs of 8 MB from one caller",
                f"{accepted} accepted, {refused} refused (429 job_storage_full); RSS +{grown:.0f} MB", stall, others,
                accepted <= 8 and accepted + refused == sizes.jobs and grown < 200)]
    (status, body, took), stall, others = r.measure(lambda: send(r.port, "GET", "/v1/jobs", None))
    rows.append(Row("2", "`GET /v1/jobs` with those jobs retained",
                    f"{status}, {len(body) / 1e6:.2f} MB in {took * 1000:.0f} ms", stall, others,
                    status == 200 and len(body) < 100_000))
    return rows


def attack_admin(r: Router, sizes: Sizes) -> list[Row]:
    plane = {"enabled": True, "auth": {"requireApiKey": False, "anonymous": "allow"}}

    def put(n: int) -> tuple[int, bytes, float]:
        keys = [{"id": f"k{i}", "keyHash": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
                 "scopes": ["standalone", "runtimeAgent"], "name": f"key number {i}"} for i in range(n)]
        body = json.dumps({"config": {"planes": {"standalone": plane, "runtimeAgent": plane}, "apiKeys": keys}})
        return send(r.port, "PUT", "/v1/admin/access/config", body.encode(), {"authorization": f"Bearer {ADMIN_KEY}"})

    rows = []
    for n, expect in ((sizes.admin_keys, (413,)), (200, (200,))):
        (status, body, took), stall, others = r.measure(lambda n=n: put(n))
        rows.append(Row("16", f"admin PUT of {n:,} keys", f"{status} {code_of(body)} in {took * 1000:.0f} ms",
                        stall, others, status in expect and stall <= sizes.stall_ms))
    return rows


# ---- a scripted upstream: reply size, encoding, interim heads, credentials -------------------------------------

def upstream_attacks(workdir: Path, sizes: Sizes) -> list[Row]:
    from bounds_support import COMPLETION, RawUpstream, reply

    loop = LoopThread()
    loop.thread.start()
    fake = RawUpstream(trickle=b"x" * (1 << 20))  # 1 MB every 10 ms
    port = loop.call(fake.start())
    models = [dict(m, timeoutMs=3000) for m in TEST_CONFIG["models"]]
    r = Router(workdir / "upstream", merge(TEST_CONFIG, {
        "ollama": {"baseUrl": f"http://ollama:s3cr%40t@127.0.0.1:{port}"}, "models": models})).start()
    chat = "/v1/chat/completions"
    rows = []
    try:
        fake.script[chat] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        peak = RssPeak(r.proc)
        (status, body, took), stall, others = r.measure(lambda: send(r.port, "POST", chat, chat_bytes()))
        grown = peak.stop() / 1024
        rows.append(Row("3", "a reply announcing 10 GB, sent as fast as the router reads",
                        f"{status} {code_of(body)} in {took * 1000:.0f} ms; RSS +{grown:.0f} MB", stall, others,
                        status == 502 and grown < 50))
        fake.trickle = b""
        for item, what, script, expect in (
                ("11", "a gzip-encoded 200", reply(b"\x1f\x8b" + b"\0" * 40, headers="Content-Encoding: gzip\r\n"), 502),
                ("11", "an HTML 200", reply(b"<html>proxy error</html>", headers="Content-Type: text/html\r\n"), 502),
                ("12", "`100 Continue`, then the reply", b"HTTP/1.1 100 Continue\r\n\r\n" + reply(COMPLETION), 200)):
            fake.script[chat] = script
            (status, body, took), stall, others = r.measure(lambda: send(r.port, "POST", chat, chat_bytes()))
            rows.append(Row(item, what, f"{status} {code_of(body)} in {took * 1000:.0f} ms", stall, others,
                            status == expect))
        rows.append(credentials_row(r, fake, loop))
    finally:
        r.stop()
        loop.call(fake.stop())
        loop.end_loop()
    return rows


class RssPeak:
    """The most a process's RSS grew while this sampler ran (kB)."""

    def __init__(self, proc: RouterProcess) -> None:
        self.proc = proc
        self.start = self.peak = proc.rss_kb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.proc.rss_kb())

    def stop(self) -> int:
        self._done.set()
        self._thread.join(5)
        return self.peak - self.start


def credentials_row(r: Router, fake: Any, loop: LoopThread) -> Row:
    authorized = any("\r\nAuthorization: Basic " in h for h in fake.heads)
    loop.call(fake.stop())
    status, body, _ = send(r.port, "POST", "/v1/chat/completions", chat_bytes())
    _, _, runtime = call(r.port, "GET", "/v1/router/runtime", headers={"host": "localhost"})
    shown = [where for where, text in (("503 body", body.decode()), ("runtime", json.dumps(runtime)),
                                       ("log", r.proc.log_text())) if "s3cr" in text]
    return Row("14", "`ollama.baseUrl: http://ollama:s3cr%40t@…`, then Ollama down",
               f"Basic auth {'sent' if authorized else 'not sent'}; {status} {code_of(body)}; password shown in: "
               f"{', '.join(shown) or 'nothing'}", 0.0, "", authorized and not shown)


# ---- sqlite lock, audit on a full disk ----------------------------------------------------------------------

def attack_sqlite(workdir: Path, sim_url: str, sizes: Sizes) -> Row:
    db = workdir / "sqlite" / "jobs.sqlite"
    r = Router(workdir / "sqlite", merge(TEST_CONFIG, {"ollama": {"baseUrl": sim_url},
                                                        "jobs": {"store": "sqlite", "sqlitePath": str(db)}})).start()
    code = (f"import sqlite3, sys\ndb = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.read()\n")
    locker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        (status, body, took), stall, others = r.measure(
            lambda: send(r.port, "POST", "/v1/chat/completions", chat_bytes(mode="async")))
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(10)
        r.stop()
    return Row("8", "an async job while another process holds the sqlite write lock",
               f"{status} {code_of(body)} in {took * 1000:.0f} ms", stall, others,
               status == 503 and took < 1 and stall <= sizes.stall_ms)


def attack_audit(workdir: Path, sim_url: str) -> Row:
    cfg = main_config(sim_url, workdir / "audit")
    cfg["access"]["admin"]["auditLogPath"] = "/dev/full"
    r = Router(workdir / "audit", cfg).start()
    try:
        before = (workdir / "audit" / "access.yaml").read_bytes()
        key = {"id": "added", "keyHash": generate_key()[1], "scopes": ["standalone"]}
        (status, body, _), stall, others = r.measure(lambda: send(
            r.port, "POST", "/v1/admin/access/keys", json.dumps(key).encode(), {"authorization": f"Bearer {ADMIN_KEY}"}))
        changed = (workdir / "audit" / "access.yaml").read_bytes() != before
    finally:
        r.stop()
    return Row("9", "`POST keys` with the audit log on a full disk (`/dev/full`)",
               f"{status} {code_of(body)}; key {'persisted' if changed else 'not persisted'}", stall, others,
               status == 503 and not changed)


# ---- running and reporting ----------------------------------------------------------------------------------

def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Every attack; router processes started meanwhile run with the slow-callback log."""
    (workdir / "sitecustomize.py").write_text(POLICY)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), saved) if p)
    try:
        return _attacks(sizes, workdir)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def _attacks(sizes: Sizes, workdir: Path) -> list[Row]:
    sim = SimThread(calls_kept=10)  # the bodies it keeps must not blur the router's figures
    rows: list[Row] = []
    try:
        r = Router(workdir / "main", main_config(sim.url, workdir / "main")).start()
        try:
            rows += attack_bodies(r, sizes)
            rows.append(attack_kdf(r, sizes))
            rows.append(attack_rebinding(r))
            rows += attack_jobs(r, sizes)
            rows += attack_admin(r, sizes)
        finally:
            r.stop()
        rows += upstream_attacks(workdir, sizes)
        rows.append(attack_sqlite(workdir, sim.url, sizes))
        if os.path.exists("/dev/full"):
            rows.append(attack_audit(workdir, sim.url))
    finally:
        sim.stop()
    return rows


def report(rows: list[Row], sizes: Sizes) -> str:
    table = md_table(["item", "attack", "outcome", "longest stall", "other clients (/health)", "verdict"],
                     [(r.item, r.attack, r.outcome, f"{r.stall_ms:.0f} ms" if r.stall_ms else "< 50 ms",
                       r.others, "ok" if r.ok else "FAIL") for r in rows])
    return f"{table}\n\nstall limit {sizes.stall_ms:.0f} ms; {drillkit.machine()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CI sizes")
    ap.add_argument("--stall-ms", type=float, help="the longest callback an attack may cost (default 50, quick 250)")
    args = ap.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.stall_ms is not None:
        sizes.stall_ms = args.stall_ms
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(sizes, Path(tmp))
    print(report(rows, sizes))
    failed = [r for r in rows if not r.ok]
    for r in failed:
        print(f"FAIL item {r.item}: {r.attack}: {r.outcome}, stall {r.stall_ms:.0f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
