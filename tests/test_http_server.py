"""The HTTP server over real sockets and over a hand-driven transport: what the parser's verdicts become
on the wire, flow control, and the response heads it writes."""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import h11
import pytest
from http_support import FakeTransport, raw_exchange

from ollama_agent_router.http.connection import Connection, Phase, ServerState
from ollama_agent_router.http.messages import Response, ServerLimits, StreamResponse
from ollama_agent_router.log import Logger


@pytest.mark.parametrize(
    "version,status,code",
    [
        (b"HTTP/one.one", 400, "bad_request"),  # not an HTTP-version at all (RFC 9112 §2.3)
        (b"HTTP/1\xa21", 400, "bad_request"),
        (b"HTTP/1.1x", 400, "bad_request"),
        (b"HTTP/2.0", 505, "http_version_unsupported"),  # well-formed, a major we do not speak (RFC 9110 §15.6.6)
        (b"HTTP/3.0", 505, "http_version_unsupported"),
    ],
)
def test_malformed_version_is_400_and_unsupported_version_is_505(stack, version, status, code):
    out, closed = raw_exchange(stack.port, b"GET /health " + version + b"\r\nHost: localhost\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 %d " % status), out
    assert json.loads(body)["error"]["code"] == code


def test_http_1_1_without_host_is_400_and_http_1_0_needs_none(stack):
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1  # RFC 9112 §3.2
    assert b"Missing Host header" in out
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 200 ")
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.2\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 200 ")  # a higher minor version is read as 1.1 (RFC 9110 §2.5)


# ---- flow control: a client that pipelines and does not read (issue 15, item 1) ----------------------------

async def until(predicate: Callable[[], bool], turns: int = 2000) -> None:
    """Let the loop run until ``predicate()``; a connection driven by hand needs no time, only turns."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def settle(turns: int = 200) -> None:
    """Let every ready callback run: afterwards nothing moves until the transport does something."""
    for _ in range(turns):
        await asyncio.sleep(0)


def connect(handler, high_water: int | None = None, **limits) -> tuple[Connection, FakeTransport]:
    conn = Connection(ServerState(handler, ServerLimits(**limits), Logger("warning")))
    transport = FakeTransport(conn, high_water)
    conn.connection_made(transport)
    return conn, transport


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


def test_answers_wait_for_a_client_that_does_not_read():
    async def handler(req):
        return Response(200, b"x" * 1000)

    async def main() -> None:
        conn, transport = connect(handler, high_water=16_000)
        conn.data_received(GET * 2000)

        def answered() -> int:
            return transport.written.count(b"HTTP/1.1 200 ")

        await until(lambda: transport.paused_writing)
        await settle()
        size = len(transport.writes[0])
        assert answered() == 16_000 // size + 1  # the answer that crossed the high-water mark is the last one
        assert not transport.reading and conn.phase is Phase.RESPONDING
        while answered() < 2000:  # each time the client reads, the next few requests are answered
            before = answered()
            transport.drain()
            await until(lambda: answered() > before)
            await settle(5)
        await until(lambda: conn.phase is Phase.IDLE)
        assert transport.reading and not conn.buf

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_pipelined_request_waits_for_the_response_and_read_ahead_is_one_head():
    release = asyncio.Event()

    async def events():
        yield b"data: 1\n\n"
        await release.wait()
        yield b"data: 2\n\n"

    async def handler(req):
        if req.path == "/stream":
            return StreamResponse(200, events())
        await release.wait()
        return Response(200, b"ok")

    async def main() -> None:
        conn, transport = connect(handler, max_header_bytes=4096)
        conn.data_received(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        await until(lambda: b"data: 1" in transport.written)
        assert conn.phase is Phase.RESPONDING
        conn.data_received(GET)  # pipelined: read (a hang-up would be noticed) but not parsed yet
        await settle()
        assert transport.written.count(b"HTTP/1.1 200 ") == 1 and conn.buf == GET
        for _ in range(4096 // len(GET)):
            conn.data_received(GET)
        assert not transport.reading and len(conn.buf) <= 4096 + len(GET)  # one head's worth, no more
        release.set()
        await until(lambda: transport.written.count(b"HTTP/1.1 200 ") == 4096 // len(GET) + 2)
        assert transport.reading and conn.phase is Phase.IDLE and not conn.buf
        # While a request is handled, the same: reading ahead, but not past one head's worth.
        release.clear()
        conn.data_received(GET)
        await until(lambda: conn.phase is Phase.HANDLING)
        for _ in range(4096 // len(GET) + 1):
            conn.data_received(GET)
        assert not transport.reading and len(conn.buf) <= 4096 + len(GET)
        release.set()
        await until(lambda: conn.phase is Phase.IDLE and not conn.buf)
        assert transport.reading

    asyncio.run(asyncio.wait_for(main(), 30))


# ---- response heads: nothing a handler puts in a header value can split or break the head (issue 15, item 13) --

def test_control_characters_never_reach_the_response_head():
    async def handler(req):
        headers = [("X-Router-Task-Type", "a\x00b\r\nX: y"), ("X-Other", "caf\u00e9 \u20ac\x7f\tz\n")]
        return Response(200, b"{}", headers, content_type="text/plain\r\nX-Evil: 1")

    async def main() -> bytes:
        conn, transport = connect(handler)
        conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await until(lambda: conn.phase is Phase.IDLE)
        return transport.written

    raw = asyncio.run(asyncio.wait_for(main(), 10))
    head = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"X-Router-Task-Type: abX: y" in head and b"X-Other: caf\xe9 ?\tz" in head
    assert b"Content-Type: text/plainX-Evil: 1" in head
    assert not any(line.startswith((b"X: ", b"X-Evil")) for line in head) and b"\x00" not in raw
    # A strict client (h11, under httpx and so the openai SDK) reads it.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response) and dict(response.headers)[b"x-router-task-type"] == b"abX: y"


# ---- Expect: 100-continue is for HTTP/1.1 clients only (issue 15, item 15) -----------------------------------

@pytest.mark.parametrize("version,interim", [(b"HTTP/1.1", True), (b"HTTP/1.0", False)])
def test_100_continue_only_for_http_1_1(version, interim):
    asked = asyncio.Event()

    async def handler(req):
        asked.set()
        return Response(200, await req.body())

    async def main() -> bytes:
        conn, transport = connect(handler)
        conn.data_received(b"POST / " + version + b"\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        await asked.wait()  # the handler has asked for the body (and the interim reply, if any, is out)
        conn.data_received(b"hello")
        await until(lambda: b"hello" in transport.written)
        return transport.written

    raw = asyncio.run(asyncio.wait_for(main(), 10))
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ") is interim  # RFC 9110 §10.1.1
    assert raw.count(b"HTTP/1.1 200 ") == 1 and (b"100 Continue" in raw) is interim


def test_a_bad_second_request_on_a_kept_alive_connection_is_answered(stack):
    # The first answer used to leave a "responding" flag set, so the next head's 400 (or 408) was never sent.
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nBROKEN\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 200 ") and out.count(b"HTTP/1.1 400 ") == 1


def test_closing_a_connection_the_peer_already_reset_is_quiet():
    class ResetTransport(FakeTransport):
        def write_eof(self) -> None:
            raise OSError(107, "Transport endpoint is not connected")

    async def handler(req):
        return Response(200, b"ok")

    async def main() -> ResetTransport:
        conn = Connection(ServerState(handler, ServerLimits(), Logger("warning")))
        transport = ResetTransport(conn)
        conn.connection_made(transport)
        conn.data_received(GET + b"BROKEN\r\n\r\n")  # answered, then a 400 and a close for the second
        task = conn.task
        assert task is not None
        await until(lambda: transport.closing)
        await until(task.done)
        assert task.exception() is None
        return transport

    transport = asyncio.run(asyncio.wait_for(main(), 10))
    assert transport.written.count(b"HTTP/1.1 ") == 2
