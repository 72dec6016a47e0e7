"""Hostile clients: request smuggling shapes, slowloris, slow bodies, an idle flood, and path tricks.

    python bench/drills/hostile_http.py [--quick]

- Smuggling: every shape gets one 400 (413 for an absurd length; 400 or 408 for bare-LF heads) and the connection
  closes; the pipelined request behind it is never answered.
- Slowloris and slow bodies: clients dribble a head or a body one byte per second; each is cut off by
  the header or body timeout (408, then close) while a probe client keeps getting fast answers.
- Idle flood: more connections than ``server.maxConnections``, sending nothing or an unfinished head;
  those over the cap get a 503 and a close at once, the rest are closed by the header timeout, the
  router's RSS stays bounded and it serves again afterwards.
- Path tricks (in-process, instrumented): ``//``, dot segments, ``%2e%2e``, encoded slashes, case
  changes, trailing slashes, HEAD against admin, basePath prefix confusion, rewrite headers: each lands
  on exactly the handler and access plane it should, or on none.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import drillkit
from drillkit import TEST_CONFIG, Reached, RouterProcess, exchange, merge, percentile

FOLLOWER = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
BODY = b'{"messages":[{"role":"user","content":"hi"}]}'

# name -> bytes sent before the follower. The heads are refused by the parser; the bodies by the decoder.
SMUGGLING: dict[str, bytes] = {
    "CL.TE": CHAT + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE.CL": CHAT + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "two differing Content-Length": CHAT + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "Content-Length list": CHAT + b"Content-Length: 5, 6\r\n\r\nhello!",
    "Content-Length +5": CHAT + b"Content-Length: +5\r\n\r\nhello",
    "Content-Length -1": CHAT + b"Content-Length: -1\r\n\r\n",
    "Content-Length 0x5": CHAT + b"Content-Length: 0x5\r\n\r\nhello",
    "Content-Length '5 5'": CHAT + b"Content-Length: 5 5\r\n\r\nhello",
    "Content-Length 30 digits": CHAT + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n",
    "TE chunked, chunked": CHAT + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "TE gzip, chunked": CHAT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "TE identity": CHAT + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
    "TE xchunked": CHAT + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked + vertical tab": CHAT + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
    "two TE fields": CHAT + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE on HTTP/1.0": b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE obs-fold": CHAT + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "space before colon": CHAT + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "NUL in TE": CHAT + b"Transfer-Encoding: chun\x00ked\r\n\r\n0\r\n\r\n",
    "bare CR in CL": CHAT + b"Content-Length: 5\rX: y\r\n\r\nhello",
    "first header folded": CHAT + b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Host fields": CHAT + b"Host: y\r\nContent-Length: 0\r\n\r\n",
    "absolute-form target": b"POST http://x/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    "chunk size 17 hex digits": CHAT + b"Transfer-Encoding: chunked\r\n\r\n11111111111111111\r\nx\r\n0\r\n\r\n",
    "chunk size 0x5": CHAT + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk size -1": CHAT + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    "chunk without CRLF after data": CHAT + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunk size FFFFFFFFFFFFFFFF": CHAT + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nhello\r\n",
    "bare LF line endings": b"POST /v1/chat/completions HTTP/1.1\nHost: localhost\nContent-Length: 0\n\n",
}


@dataclass
class Config:
    header_timeout_ms: int
    body_timeout_ms: int
    max_connections: int
    slow_clients: int
    flood: int  # connections opened at once, well over max_connections
    open_files: int  # the router's descriptor limit in the fd drill (which keeps the default connection cap)
    byte_interval: float = 1.0  # seconds between the bytes a slow client sends


FULL = Config(header_timeout_ms=3000, body_timeout_ms=3000, max_connections=500, slow_clients=200, flood=2000,
              open_files=1024)
QUICK = Config(header_timeout_ms=1500, body_timeout_ms=1500, max_connections=60, slow_clients=20, flood=200,
               open_files=256, byte_interval=0.5)


def router_config(c: Config) -> dict:
    return merge(TEST_CONFIG, {"server": {
        "host": "127.0.0.1", "headerTimeoutMs": c.header_timeout_ms, "bodyTimeoutMs": c.body_timeout_ms,
        "idleTimeoutMs": 60_000, "maxConnections": c.max_connections, "maxHeaderBytes": 16 * 1024}})


# ---- smuggling ------------------------------------------------------------------------------------------

def drill_smuggling(port: int, timeout: float) -> dict:
    rows, failures = [], []
    for name, data in SMUGGLING.items():
        ex = exchange(port, data + FOLLOWER, expect=2, deadline=timeout)
        statuses = [r.status for r in ex.responses]
        allowed = {400, 408} if name == "bare LF line endings" else {400, 413}
        ok = len(statuses) == 1 and statuses[0] in allowed and ex.closed and not ex.timed_out
        rows.append([name, ",".join(map(str, statuses)) or "-", ex.closed, len(statuses) > 1])
        if not ok:
            failures.append(f"{name}: statuses {statuses}, closed={ex.closed}, timed_out={ex.timed_out}")
    return {"shapes": len(SMUGGLING), "rows": rows, "failures": failures}


# ---- slow clients ------------------------------------------------------------------------------------------

async def _slow_client(port: int, prefix: bytes, dribble: bytes, interval: float) -> tuple[int | None, float]:
    """Send ``prefix`` at once, then ``dribble`` a byte per ``interval``; (status, seconds until the router closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(prefix)

    async def dribbling() -> None:
        for i in range(len(dribble)):
            writer.write(dribble[i:i + 1])
            await asyncio.sleep(interval)

    task = asyncio.ensure_future(dribbling())
    try:
        data = await asyncio.wait_for(reader.read(), timeout=60)
    except (ConnectionError, asyncio.TimeoutError):
        data = b""
    finally:
        task.cancel()
        writer.close()
    elapsed = time.monotonic() - started
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    return status, elapsed


async def _probe(port: int, stop: asyncio.Event, latencies: list[float], errors: list[str]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
            if not data.startswith(b"HTTP/1.1 200"):
                errors.append(data[:80].decode("latin-1"))
        except (OSError, asyncio.TimeoutError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.1)


async def drill_slow(port: int, c: Config) -> dict:
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 64 + b"\r\n\r\n"
    body_head = CHAT + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    stop = asyncio.Event()
    latencies: list[float] = []
    probe_errors: list[str] = []
    probe = asyncio.ensure_future(_probe(port, stop, latencies, probe_errors))
    half = c.slow_clients // 2
    clients = [_slow_client(port, b"", head, c.byte_interval) for _ in range(half)]
    clients += [_slow_client(port, body_head, BODY, c.byte_interval) for _ in range(c.slow_clients - half)]
    results = await asyncio.gather(*clients)
    stop.set()
    await probe
    loris, body = results[:half], results[half:]
    failures = []
    for kind, group, limit in (("slowloris", loris, c.header_timeout_ms), ("slow body", body, c.body_timeout_ms)):
        cut = [t for s, t in group if s == 408]
        if len(cut) != len(group):
            failures.append(f"{kind}: {len(group) - len(cut)} of {len(group)} not cut off with 408: "
                            f"{sorted({s for s, _ in group if s != 408}, key=str)}")
        if cut and max(cut) > limit / 1000 + 1.5:
            failures.append(f"{kind}: cut off after {max(cut):.2f}s, the timeout is {limit / 1000:.1f}s")
    if probe_errors:
        failures.append(f"probe errors while slow clients held connections: {probe_errors[:3]}")
    return {
        "slowloris": len(loris), "slowloris_cut_s": max((t for _, t in loris), default=0.0),
        "slow_body": len(body), "slow_body_cut_s": max((t for _, t in body), default=0.0),
        "probe_requests": len(latencies), "probe_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "failures": failures,
    }


# ---- idle flood -----------------------------------------------------------------------------------------------

async def _flood_one(port: int, fat: bool, opened: asyncio.Event) -> tuple[str, float]:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return f"connect failed: {e}", 0.0
    started = time.monotonic()
    if fat:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fat: " + b"a" * (15 * 1024))  # an unfinished head near the cap
    await opened.wait()
    try:
        data = await asyncio.wait_for(reader.read(), timeout=30)
    except (ConnectionError, asyncio.TimeoutError) as e:
        data = f"{type(e).__name__}".encode()
    writer.close()
    elapsed = time.monotonic() - started
    if data.startswith(b"HTTP/1.1 503") and b"too_many_connections" in data:
        return "refused 503", elapsed
    if data.startswith(b"HTTP/1.1 408"):
        return "header timeout 408", elapsed
    if data == b"":
        return "closed idle", elapsed
    return data[:60].decode("latin-1"), elapsed


async def _taken_in(router: RouterProcess) -> None:
    """Wait until the router has taken a flood in: its descriptor count holds still."""
    last, stable_since, give_up = -1, time.monotonic(), time.monotonic() + 20
    while time.monotonic() - stable_since < 0.3 and time.monotonic() < give_up:
        await asyncio.sleep(0.05)
        now = router.fds()
        if now != last:
            last, stable_since = now, time.monotonic()


async def drill_flood(router: RouterProcess, c: Config, fat: bool) -> dict:
    port = router.port
    rss_before = router.rss_kb()
    opened = asyncio.Event()
    tasks = [asyncio.ensure_future(_flood_one(port, fat, opened)) for _ in range(c.flood)]
    await _taken_in(router)
    rss_peak = router.rss_kb()
    opened.set()
    results = await asyncio.gather(*tasks)
    outcomes: dict[str, int] = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    refused = outcomes.get("refused 503", 0)
    cut = outcomes.get("header timeout 408" if fat else "closed idle", 0)
    failures = []
    if refused < c.flood - c.max_connections or refused + cut != c.flood:
        failures.append(f"flood of {c.flood} over a cap of {c.max_connections}: {outcomes}")
    slowest_cut = max((t for o, t in results if o != "refused 503"), default=0.0)
    if slowest_cut > c.header_timeout_ms / 1000 + 3:
        failures.append(f"an idle connection was held {slowest_cut:.1f}s, the header timeout is "
                        f"{c.header_timeout_ms / 1000:.1f}s")

    def serving() -> bool:
        try:
            return drillkit.call(port, "GET", "/health", timeout=5)[0] == 200
        except OSError:
            return False

    drillkit.wait_for(serving, timeout=10, interval=0.1)
    return {"flood": c.flood, "cap": c.max_connections, "fat": fat, "outcomes": outcomes,
            "rss_before_kb": rss_before, "rss_peak_kb": rss_peak, "rss_after_kb": router.rss_kb(),
            "alive": router.alive(), "failures": failures}


# ---- fewer descriptors than connections -------------------------------------------------------------------

def drill_fd_limit(workdir: Path, c: Config) -> dict:
    """A router under ``ulimit -n`` of ``c.open_files`` (soft and hard) with the default connection cap, and
    more idle clients than descriptors: the cap is lowered to fit (and logged), clients over it get the 503,
    accept() failing for want of a descriptor is logged as a count, not a traceback each, and the router
    serves again once the clients leave."""
    workdir.mkdir(exist_ok=True)
    config = merge(TEST_CONFIG, {"server": {"host": "127.0.0.1", "headerTimeoutMs": c.header_timeout_ms}})
    router = RouterProcess(workdir, config, simulate=True, open_files=c.open_files).start()
    started = time.monotonic()
    try:
        outcomes = asyncio.run(_fd_flood(router, c.open_files + 100))
        serving = drillkit.call(router.port, "GET", "/health", timeout=10)[0] == 200
    finally:
        router.stop()
    seconds = time.monotonic() - started
    log = router.log_text()
    out = {"open_files": c.open_files, "clients": c.open_files + 100, "outcomes": outcomes, "serving": serving,
           "cap_logged": '"max_connections_lowered"' in log, "tracebacks": log.count("Traceback"),
           "accept_lines": log.count('"accept_failed"'), "log_kb": round(len(log) / 1024, 1),
           "seconds": round(seconds, 1)}
    failures = []
    if not outcomes.get("refused 503") or set(outcomes) - {"refused 503", "closed idle"}:
        failures.append(f"{out['clients']} idle clients under ulimit -n {c.open_files}: {outcomes}")
    if not out["cap_logged"] or out["tracebacks"] or out["accept_lines"] > seconds / 10 + 2 or not serving:
        failures.append(f"cap logged: {out['cap_logged']}, tracebacks: {out['tracebacks']}, accept_failed lines: "
                        f"{out['accept_lines']} in {seconds:.0f}s, serving after: {serving}")
    out["failures"] = failures
    return out


async def _fd_flood(router: RouterProcess, clients: int) -> dict[str, int]:
    opened = asyncio.Event()
    tasks = [asyncio.ensure_future(_flood_one(router.port, False, opened)) for _ in range(clients)]
    await _taken_in(router)
    opened.set()
    outcomes: dict[str, int] = {}
    for outcome, _ in await asyncio.gather(*tasks):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


# ---- path tricks (in-process, instrumented) ------------------------------------------------------------------

@dataclass(frozen=True)
class Trick:
    method: str
    path: str
    key: str  # "" | "admin" | "std" | "rt"
    statuses: tuple[int, ...]
    handler: str | None  # "METHOD /pattern" that must run, or None: no handler may run
    plane: str | None  # the access plane that must be asked, or None: access must not be consulted
    headers: tuple[tuple[str, str], ...] = ()


ADMIN_CFG = "GET /v1/admin/access/config"
TRICKS: list[Trick] = [
    Trick("GET", "/r/v1/admin/access/config", "admin", (200,), ADMIN_CFG, "admin"),  # the control case
    Trick("GET", "/r/v1/admin/access/config", "", (401,), None, "admin"),
    Trick("GET", "//v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r//v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1//admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin/access/config//", "admin", (404,), None, None),
    Trick("GET", "/v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/jobs/../admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/router/status/../../admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/./v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/%2e%2e/r/v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/%2e%2e/v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin%2Faccess%2Fconfig", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin%2faccess/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/%61dmin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin/access/config%00", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin/access/config;.css", "admin", (404,), None, None),
    Trick("GET", "/r/v1\\admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r/v1/admin/access/%c0%aeconfig", "admin", (404,), None, None),
    Trick("GET", "/r/V1/ADMIN/ACCESS/CONFIG", "", (401,), None, "admin"),
    Trick("GET", "/R/v1/Admin/Access/Config/", "", (401,), None, "admin"),
    Trick("GET", "/r/v1/admin/access/config/", "admin", (200,), ADMIN_CFG, "admin"),
    Trick("HEAD", "/r/v1/admin/access/config", "", (401,), None, "admin"),
    Trick("HEAD", "/r/v1/admin/access/config", "std", (401,), None, "admin"),
    Trick("HEAD", "/r/v1/admin/access/config", "admin", (200,), ADMIN_CFG, "admin"),
    Trick("HEAD", "/r/v1/admin/access/keys/std", "admin", (405,), None, None),
    Trick("DELETE", "/r/v1/admin/access/keys/%2e%2e", "admin", (404,), "DELETE /v1/admin/access/keys/{id}", "admin"),
    Trick("DELETE", "/r/v1/admin/access/keys/std%2f..%2f..", "", (401,), None, "admin"),
    Trick("GET", "/rx/v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r-v1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r%2fv1/admin/access/config", "admin", (404,), None, None),
    Trick("GET", "/r", "admin", (200,), "GET /", None),  # the base path's root answers as Ollama's does
    Trick("GET", "/r/", "admin", (200,), "GET /", None),
    Trick("GET", "/", "admin", (404,), None, None),
    Trick("GET", "/health", "", (404,), None, None),
    Trick("GET", "/r/health", "", (200,), "GET /health", None),
    Trick("GET", "/r/health?x=/../v1/admin/access/config", "", (200,), "GET /health", None),
    Trick("GET", "/r/health#/../v1/admin/access/config", "", (404,), None, None),
    Trick("GET", "/r/health", "", (200,), "GET /health", None,
          (("x-original-url", "/r/v1/admin/access/config"), ("x-rewrite-url", "/r/v1/admin/access/config"))),
    Trick("POST", "/r/v1/chat/completions", "", (401,), None, "standalone"),
    Trick("POST", "/r/v1/chat/completions/", "", (401,), None, "standalone"),
    Trick("POST", "/r/v1/CHAT/Completions", "", (401,), None, "standalone"),
    Trick("POST", "/r/v1/chat%2Fcompletions", "std", (404,), None, None),
    Trick("POST", "/r/v1/chat/completions", "rt", (403,), None, "standalone"),
    Trick("GET", "/r/v1/router/status", "std", (403,), None, "runtimeAgent"),
    Trick("GET", "/r/v1/router/status/", "rt", (200,), "GET /v1/router/status", "runtimeAgent"),
    Trick("GET", "/r/v1/jobs/%2e%2e%2fadmin%2faccess%2fconfig", "std", (404,), "GET /v1/jobs/{id}", "jobs"),
    Trick("GET", "/r/v1/jobs/..%2F..%2Fadmin", "", (401,), None, "jobs"),
    Trick("GET", "/r/v1/models/..%2f..%2fv1%2fadmin%2faccess%2fconfig", "std", (404,), "GET /v1/models/{id}",
          "standalone"),
    Trick("GET", "/r/v1/models/%252e%252e", "std", (404,), "GET /v1/models/{id}", "standalone"),
    Trick("GET", "/r/v1/models/%c0%ae%c0%ae", "std", (404,), None, None),
    Trick("OPTIONS", "/r/v1/admin/access/config", "", (204,), None, None),
    Trick("OPTIONS", "//v1/admin/access/config", "", (404,), None, None),
]


def drill_paths(stack: object, keys: dict[str, str]) -> dict:
    from access_support import bearer

    reached = Reached()
    stack.run(lambda: reached.install(stack.app))  # type: ignore[attr-defined]
    rows, failures = [], []
    for t in TRICKS:
        reached.clear()
        headers = dict(t.headers)
        if t.key:
            headers.update(bearer(keys[t.key]))
        reply = stack.request(t.method, t.path, headers=headers, prefix=False)  # type: ignore[attr-defined]
        handler = reached.handlers[0] if reached.handlers else None
        plane = reached.planes[0][0] if reached.planes else None
        ok = reply.status in t.statuses and handler == t.handler and plane == t.plane and len(reached.handlers) <= 1
        if t.method == "HEAD" and reply.body:
            ok = False
        rows.append([f"{t.method} {t.path}", t.key or "none", reply.status, handler or "-", plane or "-",
                     "ok" if ok else "WRONG"])
        if not ok:
            failures.append(f"{t.method} {t.path} key={t.key or 'none'}: got {reply.status} handler={handler} "
                            f"plane={plane}; want {t.statuses} handler={t.handler} plane={t.plane}")
    return {"tricks": len(TRICKS), "rows": rows, "failures": failures}


def path_stack_override(tmp: Path) -> dict:
    from access_support import LOCKED, access, api_key

    override = access(standalone=LOCKED, runtime=LOCKED, path=str(tmp / "access.yaml"), admin={},
                      keys=[api_key("std", ["standalone"]), api_key("rt", ["runtimeAgent"])])
    override["server"] = {"basePath": "/r"}
    return override


def path_keys() -> dict[str, str]:
    from access_support import ADMIN_KEY, secret

    return {"admin": ADMIN_KEY, "std": secret("std"), "rt": secret("rt")}


# ---- the whole drill ----------------------------------------------------------------------------------------------

def run(c: Config, workdir: Path) -> dict:
    from conftest import Stack

    out: dict = {}
    router = RouterProcess(workdir, router_config(c), simulate=True).start()
    try:
        out["smuggling"] = drill_smuggling(router.port, (c.header_timeout_ms + c.body_timeout_ms) / 1000 + 3)
        out["slow"] = asyncio.run(drill_slow(router.port, c))
        out["flood_idle"] = asyncio.run(drill_flood(router, c, fat=False))
        out["flood_fat"] = asyncio.run(drill_flood(router, c, fat=True))
    finally:
        router.stop()
    out["fd_limit"] = drill_fd_limit(workdir / "fd-limit", c)
    stack = Stack(path_stack_override(workdir)).start()
    try:
        out["paths"] = drill_paths(stack, path_keys())
    finally:
        stack.stop()
    out["failures"] = [f for part in out.values() if isinstance(part, dict) for f in part["failures"]]
    return out


def report(out: dict, c: Config) -> str:
    s, slow = out["smuggling"], out["slow"]
    lines = [
        f"Smuggling shapes: {s['shapes']}; answered 400/413 (or 408 for bare LF) and closed: "
        f"{s['shapes'] - len(s['failures'])}; pipelined followers answered: {sum(r[3] for r in s['rows'])}",
        drillkit.md_table(["shape", "status", "closed", "follower answered"], s["rows"]), "",
        f"Slowloris: {slow['slowloris']} clients at one byte per {c.byte_interval:g}s, header timeout "
        f"{c.header_timeout_ms / 1000:g}s: all cut off after at most {slow['slowloris_cut_s']:.2f}s",
        f"Slow body: {slow['slow_body']} clients, body timeout {c.body_timeout_ms / 1000:g}s: cut off after at most "
        f"{slow['slow_body_cut_s']:.2f}s",
        f"Probe GET /health meanwhile: {slow['probe_requests']} requests, p99 {slow['probe_p99_ms']} ms",
    ]
    for key in ("flood_idle", "flood_fat"):
        f = out[key]
        lines.append(f"{'Fat' if f['fat'] else 'Idle'} flood: {f['flood']} connections, cap {f['cap']}: {f['outcomes']};"
                     f" RSS {f['rss_before_kb']} -> {f['rss_peak_kb']} (flood held) -> {f['rss_after_kb']} kB; "
                     f"router alive: {f['alive']}")
    f = out["fd_limit"]
    lines.append(f"ulimit -n {f['open_files']}, {f['clients']} idle clients: {f['outcomes']}; cap lowered and logged: "
                 f"{f['cap_logged']}; accept_failed lines: {f['accept_lines']}, tracebacks: {f['tracebacks']}, "
                 f"log {f['log_kb']} kB in {f['seconds']} s; serving after: {f['serving']}")
    p = out["paths"]
    lines += ["", f"Path tricks: {p['tricks']}, wrong handler or plane: {len(p['failures'])}",
              drillkit.md_table(["request", "key", "status", "handler run", "plane asked", ""], p["rows"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return drillkit.sized_main(__doc__, FULL, QUICK, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
