"""Hostile HTTP fuzzer: the sans-IO parser, the chunked decoder, the upstream reader + SSE relay, and a live router.

    python bench/drills/fuzz_http.py [--cases 10000] [--parser-cases 20000] [--seed N]

Cases come from hypothesis strategies that build requests with a known framing, so most cases carry an
exact expectation: random and mutated request lines and headers; duplicate and conflicting
``Content-Length`` / ``Transfer-Encoding`` (request smuggling); obs-fold; NUL and bare CR; huge and
malformed chunk sizes; invalid UTF-8 and invalid or deeply nested JSON; a pipelined follower request.
Byte-level mutations on top lose the expectation but keep the generic checks.

The live part drives a real router process (``serve``, small header/body timeouts; the simulator runs in
this process so the router's RSS is its own) over
fresh TCP connections and judges every exchange: a strict client can parse the answer; no hang past
the server's timeouts; no 5xx made by the router itself (503 refusals, 505, and 504 when the request set
its own ``maxExecutionTimeMs``, excepted); error bodies
are the OpenAI envelope with no null; smuggling-shaped requests get 400/413/431/505 and the connection
closes without the follower being answered; the router's RSS stays flat and it logs no handler error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import drillkit
from drillkit import TEST_CONFIG, RouterProcess, SimThread, exchange, merge
from fuzz_cases import (
    MALFORMED_VERSION,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    UNSUPPORTED_VERSION,
    Case,
    cases,
    chunk_encode,
    weighted,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from ollama_agent_router.http.parser import ChunkedDecoder, ProtocolError, parse_head
from ollama_agent_router.relay import OLLAMA_NDJSON, OPENAI_SSE, StreamStats, relay
from ollama_agent_router.upstream import UpstreamResponse, _Conn

HEADER_TIMEOUT_MS = 500
BODY_TIMEOUT_MS = 500
BODY_LIMIT = 256 * 1024
DEADLINE = (HEADER_TIMEOUT_MS + BODY_TIMEOUT_MS) / 1000 + 3.0  # past this with no answer and no close: a hang

REJECT = frozenset({400, 413, 431, 505})  # what a request the parser refuses is answered with
VERSION_STATUS = {MALFORMED_VERSION: 400, UNSUPPORTED_VERSION: 505}  # when the version is all that is wrong
# 5xx the router makes on purpose: refusals that tell the client to come back, and the version reply.
INTENDED_5XX = {503: {"too_many_connections", "no_model_available", "queue_timeout", "upstream_busy",
                      "shutting_down", "ollama_unreachable", "job_store_unavailable"},
                505: {"http_version_unsupported"}}


def _settings(n: int, seed: int | None) -> Callable[[Callable], Callable]:
    def apply(fn: Callable) -> Callable:
        fn = settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))(fn)
        return hseed(seed)(fn) if seed is not None else fn
    return apply


@dataclass
class Tally:
    name: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        if len(self.failures) < 2000:
            self.failures.append(what)

    @property
    def failed(self) -> int:
        return len(self.failures)


# ---- sans-IO: parse_head -------------------------------------------------------------------------------

def fuzz_parser(n: int, seed: int | None = None) -> Tally:
    """parse_head on structured cases (exact expectation) and on raw bytes (no crash, a known status)."""
    tally = Tally("parse_head")

    def judge(block: bytes, case: Case | None) -> None:
        tally.cases += 1
        try:
            head = parse_head(block, MAX_HEADERS)
        except ProtocolError as e:
            tally.outcomes[e.status] += 1
            if e.status not in REJECT:
                tally.fail(f"status {e.status} for {block[:200]!r}")
            if case is not None and not case.mutated and not case.head_reject and not (
                    e.status == 431 and "too many headers" in case.server_reject):
                tally.fail(f"refused a valid head ({e.message}): {block[:300]!r}")
            if case is not None and not case.mutated and len(case.head_reject) == 1 and (
                    VERSION_STATUS.get(case.head_reject[0], e.status) != e.status):
                tally.fail(f"{case.head_reject[0]} answered {e.status}: {block[:300]!r}")
            return
        except Exception as e:  # noqa: BLE001 - a crash is exactly what the fuzzer looks for
            tally.fail(f"crash {type(e).__name__}: {e} for {block[:200]!r}")
            return
        tally.outcomes["parsed"] += 1
        if head.chunked and head.content_length is not None:
            tally.fail(f"both framings accepted: {block[:300]!r}")
        if case is not None and not case.mutated:
            if case.head_reject:
                tally.fail(f"accepted a head that must be refused ({case.head_reject}): {block[:300]!r}")
            elif (head.chunked, head.content_length) != (case.chunked, case.content_length):
                tally.fail(f"framing read as {(head.chunked, head.content_length)}, sent "
                           f"{(case.chunked, case.content_length)}: {block[:300]!r}")

    @_settings(n // 2, seed)
    @given(cases())
    def structured(case: Case) -> None:
        judge(case.head if not case.mutated else case.raw.split(b"\r\n\r\n", 1)[0], case)

    @_settings(n - n // 2, seed)
    @given(st.binary(max_size=400) | st.lists(st.sampled_from(
        [b"GET", b"POST", b" ", b"/", b"/v1", b"HTTP/1.1", b"\r\n", b":", b"Content-Length", b"Transfer-Encoding",
         b"chunked", b"5", b"\x00", b"\r", b"\t", b"Host", b"x", b"\xff"]), max_size=40).map(b"".join))
    def raw_bytes(block: bytes) -> None:
        judge(block, None)

    structured()
    raw_bytes()
    return tally


# ---- sans-IO: ChunkedDecoder ----------------------------------------------------------------------------

def _decode(pieces: list[bytes], limit: int) -> tuple:
    dec = ChunkedDecoder(limit)
    try:
        for i, piece in enumerate(pieces):
            used = dec.feed(piece)
            if dec.done:
                return "done", bytes(dec.body), piece[used:] + b"".join(pieces[i + 1:])
        return "partial", bytes(dec.body), b""
    except ProtocolError as e:
        return "error", e.status, len(dec.body) <= limit


def fuzz_chunked(n: int, seed: int | None = None) -> Tally:
    """Valid encodings decode to the body and leftover, whatever the splits; any bytes decode the same
    whole or split, and only ever raise ProtocolError (400/413) within the size limit."""
    tally = Tally("ChunkedDecoder")

    @_settings(n // 2, seed)
    @given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6), st.lists(st.integers(0, 4000),
           max_size=6), st.binary(max_size=40), st.integers(0, 2**32))
    def valid(body: bytes, cuts: list[int], splits: list[int], after: bytes, r: int) -> None:
        tally.cases += 1
        data = chunk_encode(body, cuts, random.Random(r), r % 7 == 0) + after
        pieces = _split(data, splits)
        try:
            got = _decode(pieces, 4096)
        except Exception as e:  # noqa: BLE001
            tally.fail(f"crash {type(e).__name__}: {e}")
            return
        tally.outcomes[got[0]] += 1
        if got != ("done", body, after):
            tally.fail(f"decoded {got!r:.200} from {data[:200]!r}")

    @_settings(n - n // 2, seed)
    @given(st.lists(st.sampled_from([b"0", b"5", b"a", b"F" * 16, b"1" * 17, b"\r\n", b";x=y", b"hello", b"\x00",
                                     b"\r", b" ", b"-", b"X-T: 1", b"4000"]), max_size=30).map(b"".join)
           | st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
    def arbitrary(data: bytes, splits: list[int]) -> None:
        tally.cases += 1
        try:
            whole = _decode([data], 1024)
            split = _decode(_split(data, splits), 1024)
        except Exception as e:  # noqa: BLE001
            tally.fail(f"crash {type(e).__name__}: {e} on {data[:200]!r}")
            return
        tally.outcomes[whole[0]] += 1
        if whole[0] == "error" and (whole[1] not in (400, 413) or not whole[2]):
            tally.fail(f"error {whole!r} on {data[:200]!r}")
        if whole[0] != "partial" and whole != split:
            tally.fail(f"whole {whole!r:.150} != split {split!r:.150} on {data[:200]!r}")

    valid()
    arbitrary()
    return tally


def _split(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p for p in points if 0 < p < len(data)})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


# ---- sans-IO: upstream reader + SSE/NDJSON relay -----------------------------------------------------------

class _Transport:
    """What the upstream connection asks of its socket, for bytes fed by hand."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Pool:
    def __init__(self) -> None:
        self.given_back = 0

    def _give_back(self, conn: Any, reusable: bool) -> None:
        self.given_back += 1


@st.composite
def upstream_streams(draw) -> tuple[bytes, bytes, bool, bool]:
    """(upstream bytes on the wire, the body they carry, whether the framing is intact, native NDJSON or SSE)."""
    native = draw(st.booleans())
    events: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(weighted((6, "delta"), (1, "usage"), (1, "junk"), (1, "error")))
        if native:
            obj = {"message": {"content": draw(st.text(max_size=10))}, "done": False}
            if kind == "error":
                obj = {"error": "boom"}
            events.append(b"junk\n" if kind == "junk" else json.dumps(obj).encode() + b"\n")
        else:
            obj = {"choices": [{"delta": {"content": draw(st.text(max_size=10))}}]}
            if kind == "usage":
                obj = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
            events.append(b": comment\n\n" if kind == "junk" else b"data: " + json.dumps(obj).encode() + b"\n\n")
    if draw(st.integers(0, 3)):
        events.append(b'{"done":true}\n' if native else b"data: [DONE]\n\n")
    body = b"".join(events)
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=8))
    wire = chunk_encode(body, cuts, draw(st.randoms(use_true_random=True)), False)
    well_formed = True
    mutation = draw(weighted((6, None), (1, "truncate"), (1, "flip"), (1, "size")))
    if mutation == "truncate":
        wire = wire[: draw(st.integers(0, len(wire)))]
        well_formed = False
    elif mutation == "flip" and wire:
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([wire[at] ^ 0x41]) + wire[at + 1:]
        well_formed = False
    elif mutation == "size":
        wire = b"FFFFFFFFFF\r\n" + wire
        well_formed = False
    return wire, body, well_formed, native


async def _relay_one(wire: bytes, splits: list[int], native: bool, stop_early: bool
                     ) -> tuple[bytes, StreamStats, int, int]:
    """(what the client got, the stream's stats, times on_end ran, times the connection was given back)."""
    conn = _Conn()
    conn.connection_made(_Transport())  # type: ignore[arg-type]

    async def feed() -> None:  # the bytes arrive in pieces, as from a socket
        for piece in _split(wire, splits):
            conn.data_received(piece)
            await asyncio.sleep(0)
        conn.eof_received()

    feeder = asyncio.ensure_future(feed())
    pool = _Pool()
    resp = UpstreamResponse(pool, conn, 200, {"transfer-encoding": "chunked"}, None)  # type: ignore[arg-type]
    stats = StreamStats()
    ended = []
    gen = relay(resp, OLLAMA_NDJSON if native else OPENAI_SSE, stats, time.perf_counter,
                    on_end=lambda: ended.append(1))
    out = bytearray()
    async for chunk in gen:
        out += chunk
        if stop_early and len(out) > 20:
            break
    await gen.aclose()
    await feeder
    return bytes(out), stats, len(ended), pool.given_back


def fuzz_relay(n: int, seed: int | None = None) -> Tally:
    """Hostile upstream bytes through UpstreamResponse.chunks and relay(): only UpstreamError inside, the
    client's stream ends in [DONE]/done or an error event, on_end runs once, the connection is given back."""
    tally = Tally("upstream reader + relay")

    @_settings(n, seed)
    @given(upstream_streams(), st.lists(st.integers(0, 2000), max_size=6), st.integers(0, 9))
    def one(stream: tuple, splits: list[int], early: int) -> None:
        wire, body, well_formed, native = stream
        tally.cases += 1
        stop_early = early == 0
        try:
            out, stats, ended, given_back = asyncio.run(_relay_one(wire, splits, native, stop_early))
        except Exception as e:  # noqa: BLE001
            tally.fail(f"crash {type(e).__name__}: {e} on {wire[:200]!r}")
            return
        tally.outcomes["completed" if stats.completed else "error-ended"] += 1
        if ended != 1 or given_back != 1:
            tally.fail(f"on_end ran {ended} times, connection given back {given_back} times")
        if stop_early:
            return
        marker = b'"done":true' if native else b"data: [DONE]"
        if well_formed and (marker in body) != stats.completed:
            tally.fail(f"completed={stats.completed} but marker present={marker in body}: {body[:200]!r}")
        if well_formed and out[: len(body)] != body:
            tally.fail("relayed bytes differ from the upstream body")
        if not stats.completed and not (native and b'"error"' in body):  # else Ollama's own error line says it
            last = out.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            try:
                err = json.loads(last if native else last[len(b"data: "):])
                ok = isinstance(err, dict) and "error" in err
            except ValueError:
                ok = False
            if not ok:
                tally.fail(f"an unfinished stream does not end with an error event: {out[-200:]!r}")

    one()
    return tally


# ---- live router ---------------------------------------------------------------------------------------

def router_config(sim_url: str) -> dict:
    return merge(TEST_CONFIG, {
        "ollama": {"baseUrl": sim_url},
        "server": {"host": "127.0.0.1", "requestBodyLimit": BODY_LIMIT, "headerTimeoutMs": HEADER_TIMEOUT_MS,
                   "bodyTimeoutMs": BODY_TIMEOUT_MS, "idleTimeoutMs": 2000, "maxHeaders": MAX_HEADERS,
                   "maxHeaderBytes": MAX_HEADER_BYTES},
        "queue": {"globalMaxQueued": 10_000, "perUserMaxQueued": 10_000},
        "jobs": {"maxRetainedJobs": 200, "resultTtlSeconds": 60},
    })


def judge_exchange(case: Case, ex: drillkit.Exchange) -> tuple[list[str], list[str]]:
    """(problems, the response statuses with their codes) for one live exchange."""
    problems: list[str] = []
    seen: list[str] = []
    if ex.timed_out:
        problems.append(f"hang: no answer and no close within {DEADLINE:.1f}s")
    if ex.malformed:
        problems.append(f"malformed response: {ex.malformed}")
    for i, r in enumerate(ex.responses):
        is_head = i == 0 and case.method == "HEAD"
        code = ""
        if r.status >= 400 and not is_head:
            try:
                body = r.json()
                err = body["error"]
                if isinstance(err, str):  # Ollama's own shape under /api, with the router's code beside it
                    err = {"message": err, "type": "ollama", "code": body["code"]}
                code = err["code"]
                if not (isinstance(err["message"], str) and isinstance(err["type"], str) and isinstance(code, str)):
                    problems.append(f"error envelope fields: {r.body[:200]!r}")
                if "null" in r.body.decode("utf-8", "replace"):
                    json.loads(r.body, object_pairs_hook=_no_null)
            except (ValueError, KeyError, TypeError) as e:
                problems.append(f"{r.status} without the JSON error envelope ({e}): {r.body[:200]!r}")
        seen.append(f"{r.status} {code}".strip())
        intended = INTENDED_5XX.get(r.status, set())
        if r.status == 504 and b'"maxExecutionTimeMs"' in case.raw:
            intended = {"upstream_timeout"}  # the request's own execution budget ran out: the right answer
        if r.status >= 500 and code not in intended and not (is_head and r.status in INTENDED_5XX):
            problems.append(f"router-made {r.status} {code}: {r.body[:200]!r}")
        if r.status == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
            tail = r.body.rstrip()
            last = tail.rsplit(b"\n", 1)[-1]
            ends = (b"data: [DONE]", b'"type":"message_stop"}', b'"type":"response.completed"}')
            if not (tail.endswith(ends) or b'"error"' in last):
                problems.append(f"SSE stream ends without its end event or an error event: {tail[-200:]!r}")
    if case.mutated:
        return problems, seen
    n = len(ex.responses)
    if case.rejected:
        if n != 1 or ex.responses[0].status not in REJECT or not ex.closed:
            problems.append(f"refusable request ({case.head_reject + case.server_reject}) got {seen}, "
                            f"closed={ex.closed}")
    elif case.body_reject:
        # A body short of its length can end inside the follower: what is left of that is a malformed request.
        remains_refused = n == 2 and case.follower and seen[1].startswith("400")
        if (n > 1 and not remains_refused) or not ex.closed:
            problems.append(f"broken body ({case.body_reject}) got {seen}, closed={ex.closed}")
    elif not ex.timed_out:
        first_closes = n >= 1 and (ex.responses[0].closes or (
            case.raw.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
            and "keep-alive" not in ex.responses[0].headers.get("connection", "").lower()))
        want = 2 if case.follower and not first_closes else 1
        if n != want:
            problems.append(f"expected {want} responses, got {seen}, closed={ex.closed}")
        elif want == 2 and ex.responses[1].status != 200:
            problems.append(f"the pipelined follower got {seen[1]}")
    return problems, seen


def _no_null(pairs: list[tuple[str, Any]]) -> dict:
    for k, v in pairs:
        if v is None:
            raise ValueError(f"JSON null at {k}")
    return dict(pairs)


def fuzz_live(port: int, n: int, seed: int | None = None, sample: Callable[[int], None] | None = None) -> Tally:
    tally = Tally("live router")
    statuses: Counter = Counter()
    slowest = [0.0]

    @_settings(n, seed)
    @given(cases())
    def one(case: Case) -> None:
        tally.cases += 1
        expect = 1 + case.follower
        heads = [case.raw.startswith(b"HEAD ")]
        ex = exchange(port, case.raw, expect=expect, head=heads, deadline=DEADLINE)
        problems, seen = judge_exchange(case, ex)
        statuses.update(s if s.startswith("5") else s.split(" ")[0] for s in seen)  # 5xx with their codes
        slowest[0] = max(slowest[0], ex.seconds)
        for p in problems:
            tally.fail(f"{p} <- {case.framing} {'mutated ' if case.mutated else ''}{case.raw[:300]!r}")
        if sample is not None:
            sample(tally.cases)

    one()
    tally.outcomes = statuses
    tally.figures["slowest exchange s"] = round(slowest[0], 2)
    return tally


def run(cases: int, parser_cases: int, seed: int | None, workdir: Path) -> dict:
    started = time.monotonic()
    sans_io = [fuzz_parser(parser_cases, seed), fuzz_chunked(parser_cases, seed), fuzz_relay(parser_cases // 4, seed)]
    sim = SimThread()  # in this process, so the router's RSS is the router's alone
    router = RouterProcess(workdir, router_config(sim.url)).start()
    rss: list[int] = []
    fds: list[int] = []

    def sample(i: int) -> None:
        if i % max(1, cases // 10) == 0:
            rss.append(router.rss_kb())
            fds.append(router.fds())

    try:
        live = fuzz_live(router.port, cases, seed, sample)
        alive = router.alive()
    finally:
        router.stop()
        sim.stop()
    log = router.log_text()
    crashes = log.count('"handler_error"') + log.count("Traceback")
    return {
        "tallies": sans_io + [live],
        "router_alive": alive,
        "router_crashes": crashes,
        "rss_kb": rss,
        "fds": fds,
        "seconds": round(time.monotonic() - started, 1),
        "log_tail": log[-2000:] if crashes else "",
    }


def report(result: dict) -> str:
    rows = []
    for t in result["tallies"]:
        top = ", ".join(f"{k}: {v}" for k, v in sorted(t.outcomes.items(), key=lambda kv: (-kv[1], str(kv[0]))))
        rows.append([t.name, f"{t.cases:,}", t.failed, top])
    rss = result["rss_kb"]
    lines = [drillkit.md_table(["target", "cases", "failures", "outcomes"], rows), "",
             f"router alive at the end: {result['router_alive']}; handler errors/tracebacks in its log: "
             f"{result['router_crashes']}",
             f"router RSS kB at each tenth of the live cases: {', '.join(map(str, rss))}; open fds: "
             f"{', '.join(map(str, result['fds']))}",
             f"slowest live exchange: {result['tallies'][-1].figures.get('slowest exchange s')} s "
             f"(hang deadline {DEADLINE:.1f} s); wall time {result['seconds']} s; {drillkit.machine()}"]
    lines += [f"FAIL {t.name}: {f}" for t in result["tallies"] for f in t.failures[:10]]
    if result["log_tail"]:
        lines.append(f"FAIL router log, last 2,000 characters:\n{result['log_tail']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # The simulator's thread draws request ids from the random module while hypothesis builds a case, which
    # hypothesis takes for a strategy using it.
    warnings.filterwarnings("ignore", message="Do not use the `random` module inside strategies")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="live requests against the router")
    ap.add_argument("--parser-cases", type=int, default=20_000, help="cases per sans-IO target")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.cases, args.parser_cases, args.seed, Path(tmp))
    print(report(result))
    failed = sum(t.failed for t in result["tallies"]) + result["router_crashes"] + (not result["router_alive"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
