"""HTTP/1.1 server on asyncio: one Protocol per connection, parsing delegated to http11.

A connection moves through three states: waiting for a head, receiving a body, handling. The
handler is an ``async def handler(request) -> Response | StreamResponse``. Bodies are read only when
the handler asks (so access checks run on headers first), and the server never buffers more than a
small window of an unrequested body. Every client-controlled quantity is bounded: connections,
header bytes and count, body size, and the time a client may take to send a head or a body.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable, Union

from ..access.principal import ANONYMOUS
from ..errors import HttpError, error_payload
from ..jsonutil import dumps
from ..log import Logger
from .parser import ChunkedDecoder, ProtocolError, RequestHead, find_head_end, parse_head

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_UNREQUESTED_BODY_WINDOW = 64 * 1024  # bytes of a body we accept before the handler asks for it
_LINGER_SECONDS = 2.0  # how long a closing connection keeps draining a client that is still sending
_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class ServerLimits:
    max_body: int = 8 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    write_timeout: float = 60.0
    max_connections: int = 1024


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        content_type: str = JSON,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.content_type = content_type


class StreamResponse:
    """A chunked response whose body is produced by an async iterator, written as it yields."""

    __slots__ = ("status", "chunks", "headers", "content_type", "prelude")

    def __init__(
        self,
        status: int,
        chunks: AsyncIterator[bytes],
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "text/event-stream",
        prelude: bytes = b"",
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers if headers is not None else []
        self.content_type = content_type
        self.prelude = prelude  # known before the body starts: goes out in the same write as the head


def json_response(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, dumps(obj), headers)


def openai_error_body(path: str, err: HttpError) -> bytes:
    return err.body()


# (request path, error) -> the error's body in the dialect of the API behind that path.
ErrorBody = Callable[[str, HttpError], bytes]


Handler = Callable[["Request"], Awaitable[Union[Response, StreamResponse]]]


def normalize_ip(ip: str) -> str:
    """Socket peer addresses with IPv4-mapped IPv6 (``::ffff:1.2.3.4``) reduced to plain IPv4."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class Request:
    """One parsed request. ``log`` collects fields for the access log line (e.g. the selected model)."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers", "keep_alive",
        "client_ip", "request_id", "started", "log", "principal", "extra_headers", "_head", "_conn",
    )

    def __init__(self, head: RequestHead, conn: "_Connection") -> None:
        self._head = head
        self._conn = conn
        self.method = head.method
        self.target = head.target
        self.path = head.path
        self.query = head.query
        self.version = head.version
        self.headers = head.headers
        self.keep_alive = head.keep_alive
        self.client_ip = conn.client_ip
        rid = head.headers.get("x-request-id")
        self.request_id = rid if rid and _REQUEST_ID.match(rid) else f"{random.getrandbits(64):016x}"
        self.started = time.perf_counter()
        self.log: dict[str, Any] = {}
        self.principal = ANONYMOUS  # set by access control before the handler runs
        self.extra_headers: list[tuple[str, str]] = []  # added to whatever response follows (rate-limit headers)

    @property
    def has_body(self) -> bool:
        return self._head.has_body

    @property
    def content_length(self) -> int | None:
        return self._head.content_length

    @property
    def tls(self) -> ssl.SSLObject | None:
        return self._conn.ssl_object

    @property
    def disconnected(self) -> bool:
        return self._conn.closed

    async def body(self, limit: int | None = None) -> bytes:
        """The whole request body (Content-Length or chunked), at most ``limit`` bytes, else 413."""
        limit = self._conn.limits.max_body if limit is None else min(limit, self._conn.limits.max_body)
        data = await self._conn.read_body(self._head)
        if len(data) > limit:
            raise HttpError(413, f"Request body exceeds the limit of {limit} bytes", code="body_too_large")
        return data


class _Connection(asyncio.Protocol):
    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.ssl_object: ssl.SSLObject | None = None
        self.closed = False
        self.buf = bytearray()
        self.state = "head"  # head | body | handling
        self.task: asyncio.Task | None = None
        self.responding = False  # response bytes have been written for the current request
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._write_waiter: asyncio.Future | None = None
        # Body of the current request.
        self._body = bytearray()
        self._body_need = 0
        self._decoder: ChunkedDecoder | None = None
        self._body_done = True
        self._body_error: ProtocolError | None = None
        self._body_wanted = False
        self._body_waiter: asyncio.Future | None = None
        self._continue_sent = False
        self._timer_kind = ""
        self._deadline = 0.0

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Kept, because get_running_loop() costs a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = normalize_ip(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        self.ssl_object = transport.get_extra_info("ssl_object")
        conns = self.server.connections
        conns.add(self)
        if len(conns) > self.limits.max_connections or self.server.closing:
            self.server.refused += 1
            self._write_error_and_close(503, "Too many connections", "too_many_connections", [("Retry-After", "1")])
            return
        # A fresh connection gets the short header timeout: a silent client should not hold a slot for long.
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.task is not None and not self.task.done():
            # Nobody is waiting for the answer any more: cancel, so upstream work and queue slots are released.
            self.task.cancel()
        for fut in (self._body_waiter, self._write_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionResetError("client disconnected"))

    def eof_received(self) -> bool:
        return False  # a half-closed client is treated as gone

    def pause_writing(self) -> None:
        if self._write_waiter is None or self._write_waiter.done():
            self._write_waiter = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.state == "closing":
            return  # lingering after a final reply: discard what the client is still sending
        if self.state == "body":
            self._feed_body(data)
            return
        self.buf += data
        if self.state == "head":
            self._try_head()
        elif len(self.buf) > self.limits.max_header_bytes:
            self._pause_reading()  # pipelined bytes wait until the current response is done

    # ---- request head ------------------------------------------------------------------------
    def _try_head(self) -> None:
        buf = self.buf
        end = find_head_end(buf)
        if end < 0:
            if len(buf) > self.limits.max_header_bytes:
                self._write_error_and_close(431, "Request header block too large", "headers_too_large")
            elif buf and self._timer_kind != "header":
                self._arm(self.limits.header_timeout, "header")
            return
        if end - 4 > self.limits.max_header_bytes:
            self._write_error_and_close(431, "Request header block too large", "headers_too_large")
            return
        try:
            head = parse_head(bytes(buf[: end - 4]), self.limits.max_headers)
        except ProtocolError as e:
            self._write_error_and_close(e.status, e.message, e.code)
            return
        rest = bytes(buf[end:])
        self.buf = bytearray()
        if head.content_length is not None and head.content_length > self.limits.max_body:
            self._write_error_and_close(
                413, f"Request body exceeds the limit of {self.limits.max_body} bytes", "body_too_large", path=head.path
            )
            return
        self._start_body(head)
        request = Request(head, self)
        self.responding = False
        self.task = self.loop.create_task(self._handle(request))
        if self.state == "body":
            if rest:
                self._feed_body(rest)
            if self.state == "body":  # the body did not come with the head: bound the wait for it
                self._arm(self.limits.body_timeout, "body")
        else:
            self.buf = bytearray(rest)

    # ---- request body ------------------------------------------------------------------------
    def _start_body(self, head: RequestHead) -> None:
        self._body = bytearray()
        self._body_error = None
        self._body_wanted = False
        self._continue_sent = False
        self._decoder = None
        if head.chunked:
            self._decoder = ChunkedDecoder(self.limits.max_body)
        self._body_need = head.content_length or 0
        self._body_done = not head.has_body
        if self._body_done:
            self.state = "handling"
            self._disarm()
        else:
            self.state = "body"

    def _feed_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                rest = self._decoder.feed(data)
            except ProtocolError as e:
                self._body_error = e
                self._end_body(b"")
                self._pause_reading()
                return
            if self._decoder.done:
                self._body = self._decoder.body
                self._end_body(rest)
                return
            pending = len(self._decoder.body)
        else:
            take = data[: self._body_need]
            self._body += take
            self._body_need -= len(take)
            if self._body_need == 0:
                self._end_body(data[len(take):])
                return
            pending = len(self._body)
        if not self._body_wanted and pending > _UNREQUESTED_BODY_WINDOW:
            self._pause_reading()

    def _end_body(self, rest: bytes) -> None:
        self._body_done = True
        self.state = "handling"
        self._disarm()
        if rest:
            self.buf += rest
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_body(self, head: RequestHead) -> bytes:
        if not self._body_done:
            self._body_wanted = True
            if head.expect_continue and not self._continue_sent and not self._body and self.transport:
                self._continue_sent = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._resume_reading()
            self._body_waiter = self.loop.create_future()
            await self._body_waiter
        if self._body_error is not None:
            err = self._body_error
            raise HttpError(err.status, err.message, code=err.code)
        return bytes(self._body)

    # ---- handling and responding -------------------------------------------------------------
    async def _handle(self, request: Request) -> None:
        server = self.server
        server.in_flight += 1
        try:
            try:
                response = await server.handler(request)
            except HttpError as e:
                response = Response(e.status, server.error_body(request.path, e), list(e.headers))
            except Exception as e:  # a bug must not leak a traceback to the client
                if self.closed:
                    raise ConnectionResetError("client disconnected") from e
                server.log.error(
                    "handler_error", requestId=request.request_id, path=request.path,
                    error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8),
                )
                internal = HttpError(500, "Internal server error", code="internal_error")
                response = Response(500, server.error_body(request.path, internal))
            if self.closed:
                return
            if isinstance(response, StreamResponse):
                await self._send_stream(request, response)
            else:
                self._send(request, response)
            self._finish(request, response.status)
        except (asyncio.CancelledError, ConnectionError):
            self._access_log(request, 499)
        finally:
            server.in_flight -= 1
            if server.in_flight == 0 and server.idle_event is not None:
                server.idle_event.set()

    def _head_bytes(self, request: Request, status: int, content_type: str, headers: list[tuple[str, str]],
                    framing: bytes, close: bool) -> bytes:
        parts = [
            _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("ascii"),
            b"Content-Type: ", content_type.encode("latin-1"), b"\r\n",
            framing,
            b"X-Request-Id: ", request.request_id.encode("ascii"), b"\r\n",
        ]
        for name, value in headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if close:
            parts.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")  # an HTTP/1.0 client assumes close unless told
        parts.append(b"\r\n")
        return b"".join(parts)

    def _should_close(self, request: Request) -> bool:
        return not (request.keep_alive and self._body_done and self._body_error is None) or self.server.closing

    def _send(self, request: Request, response: Response) -> None:
        body = response.body
        close = self._should_close(request)
        head = self._head_bytes(
            request, response.status, response.content_type, response.headers,
            b"Content-Length: %d\r\n" % len(body), close,
        )
        self.responding = True
        assert self.transport is not None
        self.transport.write(head if request.method == "HEAD" else head + body)

    async def _send_stream(self, request: Request, response: StreamResponse) -> None:
        # HTTP/1.0 has no chunked coding: the body is the bytes themselves, ended by closing the connection.
        chunked = request.version != "1.0"
        if not chunked:
            request.keep_alive = False
        close = self._should_close(request)
        head = self._head_bytes(
            request, response.status, response.content_type, response.headers,
            b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n" if chunked else b"Cache-Control: no-cache\r\n",
            close,
        )
        transport = self.transport
        assert transport is not None
        self.responding = True
        chunks = response.chunks
        if request.method == "HEAD":  # the head alone (a GET of the live feed would never end)
            transport.write(head)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            return
        prelude = response.prelude
        if prelude:
            head += b"%x\r\n%b\r\n" % (len(prelude), prelude) if chunked else prelude
        transport.write(head)
        try:
            async for chunk in chunks:
                # A failed send marks the transport closing at once; connection_lost only comes on the
                # next loop turn, and a generator with events ready would write into the void until then.
                if self.closed or transport.is_closing():
                    break
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                waiter = self._write_waiter
                if waiter is not None and not waiter.done():
                    await asyncio.wait((waiter,), timeout=self.limits.write_timeout)
                    if not waiter.done():
                        raise asyncio.TimeoutError
                    waiter.result()  # raises if the connection went away while we waited
            if not self.closed and not transport.is_closing() and chunked:
                transport.write(b"0\r\n\r\n")
        except asyncio.TimeoutError:
            self._abort()  # the client stopped reading
        except Exception as e:
            # Headers are gone, so no error reply is possible: cut the connection so the client
            # cannot mistake a truncated body for a complete one.
            self.server.log.warning("stream_aborted", requestId=request.request_id, error=f"{type(e).__name__}: {e}")
            self._abort()
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _finish(self, request: Request, status: int) -> None:
        self._access_log(request, status)
        if self.closed:
            return
        if self._should_close(request):
            self._close()
            return
        self.state = "head"
        self.task = None
        self._arm(self.limits.idle_timeout)
        self._resume_reading()
        if self.buf:
            self._try_head()

    def _access_log(self, request: Request, status: int) -> None:
        log = self.server.log
        if not log.enabled("info"):
            return
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            durationMs=round((time.perf_counter() - request.started) * 1000, 3),
            requestId=request.request_id,
            client=request.client_ip,
            **request.log,
        )

    def _write_error_and_close(self, status: int, message: str, code: str,
                               headers: list[tuple[str, str]] | None = None, path: str | None = None) -> None:
        """An error the connection answers by itself; once the head named a ``path``, in that API's dialect."""
        if self.transport is None or self.closed:
            return
        if not self.responding:
            if path is None:
                body = dumps(error_payload(status, message, code))
            else:
                body = self.server.error_body(path, HttpError(status, message, code=code))
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers or [])
            self.transport.write(
                _STATUS_LINES.get(status, b"HTTP/1.1 400 Bad Request\r\n")
                + b"Content-Type: " + JSON.encode() + b"\r\nContent-Length: %d\r\n" % len(body)
                + extra.encode("latin-1") + b"Connection: close\r\n\r\n" + body
            )
            self.responding = True
        self._close()

    def _close(self) -> None:
        """Close after the last reply. Closing a socket with unread input makes the kernel send a reset,
        which can destroy the reply before the client reads it (a 413 while the body is still coming).
        So: send FIN, keep reading and discarding for a moment, and close when the client does."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.state == "closing":
            return
        if not transport.can_write_eof():
            self._disarm()
            transport.close()
            return
        self.state = "closing"
        transport.write_eof()
        self._resume_reading()
        self._arm(_LINGER_SECONDS, "linger")

    def _abort(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    # ---- flow control and timers ----------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def _arm(self, seconds: float, kind: str = "idle") -> None:
        """Set the connection's one deadline. The timer handle is reused: moving a deadline later costs
        a float store, and an early firing re-arms itself (requests on a keep-alive connection would
        otherwise create and cancel two timers each)."""
        loop = self.loop
        self._deadline = loop.time() + seconds
        self._timer_kind = kind
        if self._timer is not None and self._timer.when() > self._deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timeout)

    def _disarm(self) -> None:
        self._timer_kind = ""  # a pending handle finds nothing to do when it fires

    def _on_timeout(self) -> None:
        self._timer = None
        if not self._timer_kind or self.closed:
            return
        loop = self.loop
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._on_timeout)
            return
        kind, self._timer_kind = self._timer_kind, ""
        if kind == "linger":
            self._abort()
            return
        if kind == "idle":
            self._close()
            return
        self.server.timeouts += 1
        if self.task is not None and not self.task.done():
            self.task.cancel()
        what = "headers" if kind == "header" else "the request body"
        self._write_error_and_close(408, f"Timed out waiting for {what}", "request_timeout")


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        limits: ServerLimits = ServerLimits(),
        ssl_context: ssl.SSLContext | None = None,
        log: Logger | None = None,
        error_body: ErrorBody = openai_error_body,
    ) -> None:
        self.handler = handler
        self.error_body = error_body
        self.limits = limits
        self.ssl_context = ssl_context
        self.log = log or Logger("warning")
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.refused = 0
        self.timeouts = 0
        self.closing = False
        self.idle_event: asyncio.Event | None = None
        self._servers: list[asyncio.base_events.Server] = []

    async def listen(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=self.ssl_context, backlog=1024, reuse_address=True
        )
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> bool:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, then close everything.

        Returns True when every in-flight request finished in time.
        """
        self.closing = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.state == "head" and not conn.buf:
                conn._close()
        clean = True
        if self.in_flight:
            self.idle_event = asyncio.Event()
            waiter = asyncio.ensure_future(self.idle_event.wait())
            await asyncio.wait((waiter,), timeout=grace)
            clean = waiter.done()
            waiter.cancel()
        for conn in list(self.connections):
            conn._abort() if conn.state != "head" else conn._close()
        for server in self._servers:
            await server.wait_closed()
        return clean
