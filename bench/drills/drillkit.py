"""What the drills share: paths, the router as a real process, the simulator on its own thread, raw HTTP.

Every drill module imports this first: it puts the repository root and ``tests/`` (for ``conftest``'s
test config and in-process ``Stack``) on ``sys.path``, so ``python bench/drills/<drill>.py`` runs from a
plain checkout and the CI variants under ``tests/drills`` can import the drills themselves.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[2]
for _p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from benchkit import free_port, rss_kb  # noqa: E402
from conftest import TEST_CONFIG, LoopThread, merge, wait_for  # noqa: E402

__all__ = [
    "ROOT", "TEST_CONFIG", "merge", "wait_for", "free_port", "RouterProcess", "SimThread", "RawResponse",
    "Exchange", "parse_response", "exchange", "call", "percentile", "md_table", "rss_kb", "open_fds",
]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RouterProcess:
    """``python -m ollama_agent_router serve`` on a fixed port, so clients can reconnect across restarts."""

    def __init__(self, workdir: Path, raw_config: dict, *, port: int | None = None, simulate: bool = False,
                 log_level: str = "warning", open_files: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / "router.yaml"
        self.config_path.write_text(json.dumps(merge(raw_config, {"server": {"port": self.port}})))  # JSON is YAML
        self.log_path = workdir / "router.log"
        self.simulate = simulate
        self.log_level = log_level
        self.open_files = open_files  # soft and hard RLIMIT_NOFILE of the router process, as with `ulimit -n`
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> "RouterProcess":
        cmd = [sys.executable, "-m", "ollama_agent_router", "serve", "-c", str(self.config_path),
               "--log-level", self.log_level]
        if self.simulate:
            cmd.append("--simulate")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.workdir),
                                         preexec_fn=self._limit_open_files if self.open_files else None)
        self.starts += 1

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            try:
                return call(self.port, "GET", "/health", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=timeout, interval=0.02)
        return self

    def _limit_open_files(self) -> None:  # in the child, before it starts Python
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code (negative: killed by a signal)."""
        self.send(sig)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if not self.alive():
            return
        try:
            self.kill(signal.SIGTERM, timeout=20)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def fds(self) -> int:
        return open_fds(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class SimThread(LoopThread):
    """The simulator on its own event loop and thread, so it outlives router processes and can be steered."""

    def __init__(self, **sim_kw: Any) -> None:
        from ollama_agent_router.config.parse import parse_config
        from ollama_agent_router.simulator.server import OllamaSimulator

        super().__init__()
        self.thread.start()
        self.sim = OllamaSimulator.from_config(parse_config(TEST_CONFIG), **sim_kw)
        self.call(self.sim.start())
        self.url = self.sim.url

    def stop(self) -> None:
        self.call(self.sim.stop())
        self.end_loop()


# ---- raw HTTP -----------------------------------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names, repeated fields joined with ", "
    body: bytes

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(buf: bytes, head_request: bool = False, eof: bool = False) -> tuple[RawResponse, int] | None:
    """One HTTP/1.1 response from the start of ``buf``: (response, bytes used), or None when incomplete.

    ``eof``: the connection has closed, which ends a body sent without framing (HTTP/1.0 streams).
    Raises ValueError on anything a strict client would refuse (the router must never send that).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3 or parts[0] != "HTTP/1.1" or not (parts[1].isdigit() and len(parts[1]) == 3):
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"bad header line {line!r}")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    status = int(parts[1])
    pos = end + 4
    if head_request or status < 200 or status in (204, 304):
        return RawResponse(status, headers, b""), pos
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(buf[pos:nl].split(b";")[0], 16)
            if size == 0:
                if buf[nl + 2:nl + 4] == b"":
                    return None
                if buf[nl + 2:nl + 4] != b"\r\n":
                    raise ValueError("trailers are not expected from the router")
                return RawResponse(status, headers, bytes(body)), nl + 4
            if len(buf) < nl + 2 + size + 2:
                return None
            body += buf[nl + 2:nl + 2 + size]
            if buf[nl + 2 + size:nl + 4 + size] != b"\r\n":
                raise ValueError("bad chunk terminator")
            pos = nl + 4 + size
    length = headers.get("content-length")
    if length is None:
        if "close" not in headers.get("connection", "").lower():
            raise ValueError("a response without framing that does not close the connection")
        return (RawResponse(status, headers, buf[pos:]), len(buf)) if eof else None
    if not length.isdigit():
        raise ValueError(f"bad Content-Length {length!r}")
    if len(buf) < pos + int(length):
        return None
    return RawResponse(status, headers, buf[pos:pos + int(length)]), pos + int(length)


@dataclass
class Exchange:
    responses: list[RawResponse] = field(default_factory=list)
    closed: bool = False  # the router closed the connection (FIN or reset)
    timed_out: bool = False  # neither all answers nor a close before the deadline: a hang
    malformed: str = ""  # what a strict client could not parse
    seconds: float = 0.0


def exchange(port: int, data: bytes, *, expect: int = 1, head: Sequence[bool] = (), deadline: float = 5.0,
             source: str | None = None, pace: Callable[[socket.socket], None] | None = None) -> Exchange:
    """Send ``data`` on a fresh connection and read until ``expect`` responses arrived, the router closed,
    or ``deadline`` seconds passed. ``head[i]`` says the i-th request was a HEAD (its response has no body).
    ``pace`` sends the bytes itself (slow clients); ``source`` binds the client address (127.0.0.x)."""
    out = Exchange()
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline,
                                    source_address=(source, 0) if source else None)
    try:
        try:
            if pace is not None:
                pace(sock)
            else:
                sock.sendall(data)
        except OSError:
            pass  # the router may refuse and close while we still send; what it answered is read below
        buf = _read_responses(sock, out, expect, head, started + deadline)
        if not out.closed and not out.timed_out and out.responses and out.responses[-1].closes:
            out.closed = not buf and _closes_soon(sock, started + deadline - time.monotonic())
    finally:
        sock.close()
    out.seconds = time.monotonic() - started
    return out


def _read_responses(sock: socket.socket, out: Exchange, expect: int, head: Sequence[bool], until: float) -> bytes:
    """Read into ``out`` until ``expect`` responses, a close or ``until``; returns the bytes left unread."""
    buf = b""
    while len(out.responses) < expect:
        is_head = len(head) > len(out.responses) and head[len(out.responses)]
        try:
            parsed = parse_response(buf, is_head)
        except ValueError as e:
            out.malformed = str(e)
            break
        if parsed is not None:
            response, used = parsed
            buf = buf[used:]
            if response.status >= 200:
                out.responses.append(response)
                if response.closes and is_head:
                    # A HEAD request the parser refused is answered with a body: what follows is not news.
                    out.closed = _closes_soon(sock, until - time.monotonic(), strict=False)
                    break
            continue
        chunk = _recv(sock, out, until)
        if chunk is None:
            break
        if not chunk:
            out.closed = True
            try:
                parsed = parse_response(buf, is_head, eof=True)
            except ValueError as e:
                out.malformed = str(e)
            if parsed is not None and parsed[0].status >= 200:
                out.responses.append(parsed[0])
            break
        buf += chunk
    return buf


def _recv(sock: socket.socket, out: Exchange, until: float) -> bytes | None:
    """The next bytes (b"" at the end of the stream), or None after a timeout or a reset (noted in ``out``)."""
    left = until - time.monotonic()
    if left <= 0:
        out.timed_out = True
        return None
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except socket.timeout:
        out.timed_out = True
    except ConnectionError:
        out.closed = True
    return None


def _closes_soon(sock: socket.socket, left: float, strict: bool = True) -> bool:
    """After a ``Connection: close`` answer the router must close. ``strict``: anything it still sends is a
    defect; otherwise what comes first is read past."""
    sock.settimeout(max(0.05, left))
    try:
        while sock.recv(65536):
            if strict:
                return False
        return True
    except ConnectionError:
        return True
    except socket.timeout:
        return False


def call(port: int, method: str, path: str, body: Any = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """One JSON request on a fresh connection: (status, lower-case headers, decoded body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, decoded
    finally:
        conn.close()


# ---- running a drill ----------------------------------------------------------------------------------

def sized_main(doc: str, full: Any, quick: Any, run: Callable[[Any, Path], dict], report: Callable[[dict, Any], str],
               argv: list[str] | None) -> int:
    """``main`` of a drill with full and CI sizes (``--quick``): run it in a temporary directory, print the
    report, the failures and the machine, exit 1 if anything failed."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CI sizes")
    args = ap.parse_args(argv)
    c = quick if args.quick else full
    with tempfile.TemporaryDirectory() as tmp:
        out = run(c, Path(tmp))
    print("\n".join([report(out, c)] + [f"FAIL {f}" for f in out["failures"]] + [machine()]))
    return 1 if out["failures"] else 0


# ---- figures ------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """A one-line description of where a figure was measured."""
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {load:.1f} at the end"


# ---- what a request reached inside the router -----------------------------------------------------------

class Reached:
    """Records, per request, the access plane ``authorize`` was asked about (with its answer) and the
    route whose handler ran. Installed on a live in-process App; requests must go one at a time."""

    def __init__(self) -> None:
        self.planes: list[tuple[str | None, bool]] = []  # (plane, admitted)
        self.handlers: list[str] = []  # "METHOD /pattern"

    def clear(self) -> None:
        self.planes.clear()
        self.handlers.clear()

    def install(self, app: Any) -> None:
        from dataclasses import replace

        from ollama_agent_router.api.table import RouteTable
        from ollama_agent_router.errors import HttpError

        def wrap(route: Any) -> Any:
            async def handler(req: Any, params: dict) -> Any:
                self.handlers.append(f"{route.method} {route.pattern}")
                return await inner(req, params)

            inner = route.handler
            return replace(route, handler=handler)

        app.gate.routes = RouteTable([wrap(r) for r in app.routes.routes], app.cfg.server.base_path)
        authorize = app.access.authorize

        async def checked(req: Any, plane: str | None) -> Any:
            try:
                principal = await authorize(req, plane)
            except HttpError:
                self.planes.append((plane, False))
                raise
            self.planes.append((plane, True))
            return principal

        app.access.authorize = checked
