"""Regression tests for the defects the drills found, each at the smallest scale that shows it."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from conftest import VIBE, chat_body, make_config, wait_for
from http_support import FakeTransport, raw_exchange

from ollama_agent_router.api.bodies import MAX_JSON_DEPTH
from ollama_agent_router.http.connection import Connection, ServerState
from ollama_agent_router.http.messages import ServerLimits, StreamResponse
from ollama_agent_router.jsonutil import JsonLimit, parse_json_steps
from ollama_agent_router.log import Logger
from ollama_agent_router.relay import OLLAMA_NDJSON, OPENAI_SSE, StreamStats, relay
from ollama_agent_router.upstream import UpstreamError

# ---- deeply nested JSON was a 500 (RecursionError), found by the fuzzer's "deep" bodies ------------------

def nested(depth: int) -> bytes:
    return b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"


def test_json_depth_counts_without_recursing():
    def depth_ok(text: str, limit: int) -> bool:
        try:
            for _ in parse_json_steps(text, 10**6, limit):
                pass
        except JsonLimit:
            return False
        return True

    assert depth_ok("1", 0) and depth_ok("[]", 1) and not depth_ok("[]", 0)
    assert depth_ok('{"a": [1, {"b": []}]}', 4) and not depth_ok('{"a": [1, {"b": []}]}', 3)
    assert not depth_ok("[" * 50_000 + "]" * 50_000, 49_999) and depth_ok("[" * 50_000 + "]" * 50_000, 50_000)


def error_code(body: dict) -> str:
    """The router's code in any dialect: inside ``error``, or beside Ollama's ``{"error": "..."}``."""
    return body["code"] if isinstance(body["error"], str) else body["error"]["code"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/router/execute", "/v1/router/route",
                                  "/v1/messages", "/v1/responses"])
def test_deep_json_is_a_400_at_every_depth(stack, path):
    for depth in (MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 10, 975, 980, 985, 5000, 100_000):
        r = stack.request("POST", path, raw=nested(depth - 1))  # the outer object is one more level
        assert r.status == 400 and error_code(r.json()) == "invalid_json", (depth, r)
    assert stack.request("POST", "/v1/chat/completions", raw=nested(MAX_JSON_DEPTH - 1)).status == 200


# ---- an upstream cut mid-line glued the error event onto the half line, found by the relay fuzzer --------

class _Upstream:
    def __init__(self, pieces: list[bytes], error: UpstreamError | None) -> None:
        self.pieces, self.error = pieces, error

    async def chunks(self):
        for piece in self.pieces:
            yield piece
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        pass


def relayed(pieces: list[bytes], *, native: bool = False, cut: bool = True) -> bytes:
    async def main() -> bytes:
        error = UpstreamError("closed", "the reply was cut off") if cut else None
        out = [c async for c in relay(_Upstream(pieces, error), OLLAMA_NDJSON if native else OPENAI_SSE, StreamStats(), time.perf_counter)]
        return b"".join(out)
    return asyncio.run(main())


def test_sse_cut_mid_line_ends_with_a_whole_error_event():
    out = relayed([b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\nda', b'ta: {"choices":[{"del'])
    assert out.startswith(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
    assert out.count(b'data: {"choices"') == 1  # the half event never reaches the client
    events = out.split(b"\n\n")
    error = json.loads(events[-2][len(b"data: "):])
    assert error["error"]["code"] == "upstream_stream_error"


def test_sse_cut_inside_an_event_closes_that_event_first():
    out = relayed([b'data: {"a":1}\n'])  # the line is whole, the event's blank line never came
    assert out.endswith(b"\n\n") and out.startswith(b'data: {"a":1}\n\ndata: {"error"')


def test_ndjson_cut_mid_line_ends_with_an_error_line():
    out = relayed([b'{"message":{"content":"a"},"done":false}\n{"message":{"cont'], native=True)
    lines = out.rstrip(b"\n").split(b"\n")
    assert json.loads(lines[0])["message"]["content"] == "a"
    assert "cut off" in json.loads(lines[-1])["error"]


def test_stream_without_done_and_without_a_final_newline_still_ends_readably():
    out = relayed([b'data: {"a":1}\n\ndata: {"b":2}'], cut=False)
    assert out.startswith(b'data: {"a":1}\n\ndata: {"b":2}\n\n')  # what Ollama sent, untouched
    assert json.loads(out.split(b"\n\n")[-2][len(b"data: "):])["error"]["message"].startswith("The model stream ended")


def test_whole_lines_pass_through_as_they_come():
    pieces = [b": router {}\n\n", b'data: {"x":1}\n\n', b"data: [DONE]\n\n"]
    assert relayed(pieces, cut=False) == b"".join(pieces)


# ---- HTTP/1.0 clients got chunked streams and no keep-alive confirmation, found by the live fuzzer -------

def test_http_1_0_stream_is_not_chunked_and_ends_with_the_connection(stack):
    body = json.dumps(dict(chat_body("Hello there"), stream=True)).encode()
    out, closed = raw_exchange(stack.port, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body)
                               + body)
    head, _, payload = out.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower() and b"Connection: close" in head
    assert payload.startswith(b": router ") and payload.rstrip().endswith(b"data: [DONE]")


def test_http_1_0_keep_alive_is_confirmed_and_honoured(stack):
    request = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    out, closed = raw_exchange(stack.port, request + request, timeout=1)
    assert not closed and out.count(b"HTTP/1.1 200 OK") == 2 and out.count(b"Connection: keep-alive") == 2
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert closed and b"Connection: close" in out


# ---- queued jobs started during the shutdown grace period, found by the SIGTERM drill ---------------------

def test_shutdown_starts_no_queued_job(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 20, "reply_tokens": 20})  # about a second a reply
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        stack.request("POST", "/v1/chat/completions", dict(chat_body("Hello there", allowAsync=False), model=VIBE))))
        for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: stack.app.scheduler.counts(VIBE)[1] == 2)  # both of the model's slots are taken
    jobs = [stack.request("POST", "/v1/chat/completions", dict(chat_body(f"Hello there {i}", mode="async"),
                                                                model=VIBE)).json()["id"] for i in range(3)]
    calls = len(stack.chat_calls())
    assert stack.call(stack.app.stop(10.0)) is True
    for t in threads:
        t.join(10)
    assert [r.status for r in results] == [200, 200]
    assert len(stack.chat_calls()) == calls  # the slots freed during the grace period went to no job
    assert [stack.app.jobs.get(j).status for j in jobs] == ["queued"] * 3
    assert all(stack.app.jobs.get(j).attempts == 0 for j in jobs)


# ---- the simulator kept every request it ever saw, found by the fuzzer's RSS figure ------------------------

def test_the_simulator_keeps_only_the_latest_calls():
    from ollama_agent_router.simulator.server import OllamaSimulator

    async def main() -> list[str]:
        sim = OllamaSimulator.from_config(make_config(), calls_kept=10)
        port = await sim.start()
        for i in range(25):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /nothing/{i} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            await reader.read()
            writer.close()
        await sim.stop()
        return [c["path"] for c in sim.calls]

    assert asyncio.run(main()) == [f"/nothing/{i}" for i in range(15, 25)]


# ---- every 404 pinned its request's frames forever (one shared exception object), found by the fuzzer's RSS --

@pytest.mark.parametrize("path", ["/no/such/route", "/v1/admin/access/config"])  # unknown route; admin plane off
def test_misses_do_not_keep_their_connections_alive(stack, path):
    import gc

    def live_connections() -> int:
        gc.collect()
        return sum(isinstance(o, Connection) for o in gc.get_objects())

    before = stack.run(live_connections)
    for _ in range(30):
        assert stack.request("GET", path).status == 404
    wait_for(lambda: not stack.app.server.connections)
    assert stack.run(live_connections) <= before + 2


# ---- a stream kept writing into a connection its peer had reset, found by the fuzzer (simulator side) ------

class DyingTransport(FakeTransport):
    """Takes ``accepted`` writes, then fails like a socket whose peer reset it: asyncio marks such a
    transport closing at once and reports the lost connection only on a later loop turn."""

    def __init__(self, accepted: int) -> None:
        super().__init__()
        self.accepted = accepted

    def write(self, data) -> None:
        super().write(data)
        if len(self.writes) >= self.accepted:
            self.closing = True

    def can_write_eof(self) -> bool:
        return False


def test_a_stream_stops_writing_once_its_transport_is_closing():
    produced = []

    async def events():
        for i in range(50):  # all ready at once: nothing here gives the loop a turn
            produced.append(i)
            yield b"data: %d\n\n" % i

    async def handler(req):
        return StreamResponse(200, events())

    async def run() -> DyingTransport:
        conn = Connection(ServerState(handler, ServerLimits(), Logger("warning")))
        transport = DyingTransport(accepted=2)  # the head and the first event get out
        conn.connection_made(transport)
        conn.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.task is not None
        await conn.task
        conn.connection_lost(ConnectionResetError())
        return transport

    transport = asyncio.run(asyncio.wait_for(run(), 5))
    assert transport.writes[0].startswith(b"HTTP/1.1 200")
    # One write that failed at most; without the check every remaining event and the terminator
    # would go into the dead socket (asyncio logs "socket.send() raised exception." from the fifth).
    assert len(transport.writes) <= 3, transport.writes
    assert b"0\r\n\r\n" not in transport.writes
    assert len(produced) < 50
