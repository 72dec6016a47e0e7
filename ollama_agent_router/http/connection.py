"""One HTTP/1.1 connection on asyncio: an explicit state machine around the sans-IO parser.

A connection is always in exactly one ``Phase``; ``_to`` moves it along the transitions in ``_NEXT``
and sets the one deadline that phase has. The handler is an ``async def handler(request) ->
Response | StreamResponse``. It starts as soon as the head is parsed and reads the body only if it asks
(so access checks run on headers first); until it asks, the server buffers no more than a small
window of the body. Every client-controlled quantity is bounded: header bytes and count, body size,
and the time a client may take to send a head or a body.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
import traceback
from dataclasses import dataclass, field

from ..errors import HttpError, error_payload
from ..jsonutil import dumps
from ..log import Logger
from .heads import CLOSE, KEEP_ALIVE, response_head
from .messages import (
    JSON,
    ErrorBody,
    Handler,
    Request,
    Response,
    ServerLimits,
    StreamResponse,
    normalize_ip,
    openai_error_body,
)
from .parser import ChunkedDecoder, LengthDecoder, ProtocolError, RequestHead, find_head_end, parse_head

_UNREQUESTED_BODY_WINDOW = 64 * 1024  # bytes of a body we accept before the handler asks for it
_LINGER_SECONDS = 2.0  # how long a closing connection keeps draining a client that is still sending


class Phase(enum.IntEnum):  # an IntEnum: members hash and compare at C speed
    IDLE = 0  # no byte of the next request yet. Deadline: close quietly
    HEAD = 1  # part of a request head has arrived. Deadline: 408
    BODY = 2  # head parsed, the handler runs, the body is still coming. Deadline: 408
    HANDLING = 3  # the request is read; the handler runs. No deadline: handlers bound their own work
    RESPONDING = 4  # response bytes are going out. Deadline only while the client does not read
    CLOSING = 5  # the last reply and a FIN are sent; what the client still sends is dropped. Deadline: abort
    CLOSED = 6  # the transport is gone

# The phases by name: Python 3.11 takes a quarter of a microsecond to look a member up on its enum class,
# and a request's path asks a few dozen times.
IDLE, HEAD, BODY, HANDLING, RESPONDING, CLOSING, CLOSED = Phase


_NEXT: dict[Phase, frozenset[Phase]] = {
    # A whole head in one read goes straight to BODY or HANDLING.
    IDLE: frozenset({HEAD, BODY, HANDLING, CLOSING, CLOSED}),
    HEAD: frozenset({BODY, HANDLING, CLOSING, CLOSED}),
    # A handler may answer before the body is in (a 401 that never reads it); the connection then closes.
    BODY: frozenset({HANDLING, RESPONDING, CLOSING, CLOSED}),
    HANDLING: frozenset({RESPONDING, CLOSED}),
    RESPONDING: frozenset({IDLE, CLOSING, CLOSED}),
    CLOSING: frozenset({CLOSED}),
    CLOSED: frozenset(),
}


@dataclass
class ServerState:
    """What every connection of one server shares: the handler, the limits, and the live counts."""

    handler: Handler
    limits: ServerLimits
    log: Logger
    error_body: ErrorBody = openai_error_body  # an error's body in the dialect of the API behind its path
    connections: set["Connection"] = field(default_factory=set)
    in_flight: int = 0
    closing: bool = False  # shutting down: no new connection, no keep-alive
    idle_event: asyncio.Event | None = None  # set when in_flight drops to 0 during a shutdown


class Connection(asyncio.Protocol):
    def __init__(self, server: ServerState) -> None:
        self.server = server
        limits = self.limits = server.limits
        self.phase = IDLE
        self._deadlines = {IDLE: limits.idle_timeout, HEAD: limits.header_timeout,
                           BODY: limits.body_timeout, CLOSING: _LINGER_SECONDS}
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.ssl_object: ssl.SSLObject | None = None
        self.buf = bytearray()  # received bytes not consumed yet: a head in progress, or pipelined requests
        self._scanned = 0  # how much of buf is known to hold no end of head
        self.task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        # Flow control, orthogonal to the phase: the socket's reading, and the transport's write buffer.
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future | None = None
        # The current request's body.
        self._decoder: LengthDecoder | ChunkedDecoder | None = None
        self._body_error: ProtocolError | None = None
        self._body_waiter: asyncio.Future | None = None  # set once the handler asks for the body

    @property
    def closed(self) -> bool:
        return self.phase is CLOSED

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
            self._write_error_and_close(503, "Too many connections", "too_many_connections", [("Retry-After", "1")])
            return
        # A fresh connection gets the short header timeout: a silent client should not hold a slot for long.
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._to(CLOSED)
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.task is not None and not self.task.done():
            # Nobody is waiting for the answer any more: cancel, so upstream work and queue slots are released.
            self.task.cancel()
        for fut in (self._body_waiter, self._drain_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionResetError("client disconnected"))

    def eof_received(self) -> bool:
        return False  # a half-closed client is treated as gone

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is CLOSING:
            return  # lingering after a final reply: discard what the client is still sending
        self.buf += data
        if phase is IDLE or phase is HEAD:
            self._try_head()  # a transition decides about reading; a head still coming is refused at the cap
        elif phase is BODY and self._body_read():
            self._end_body()
        else:
            self._flow()  # the unrequested body window, or the read-ahead cap

    # ---- state ---------------------------------------------------------------------------------
    def _to(self, phase: Phase) -> None:
        """Move to ``phase``: check the transition, set that phase's deadline, start or stop reading."""
        if phase not in _NEXT[self.phase]:
            raise RuntimeError(f"HTTP connection: no transition from {self.phase.name} to {phase.name}")
        self.phase = phase
        # HANDLING and RESPONDING have none (RESPONDING's write deadline is set while waiting for a drain).
        seconds = self._deadlines.get(phase)
        if seconds is None:
            self._deadline = None
        else:
            self._arm(seconds)
        if phase is not CLOSED and phase is not RESPONDING:  # RESPONDING reads as HANDLING did
            self._flow()

    def _flow(self) -> None:
        """Read the socket or not, as the phase says. When not, the kernel's buffers fill and push back on the
        client: a connection holds one head's worth of read-ahead plus the current body, whatever it sends."""
        phase = self.phase
        if phase is BODY:
            assert self._decoder is not None
            wanted = self._body_waiter is not None or len(self._decoder.body) <= _UNREQUESTED_BODY_WINDOW
        elif phase is CLOSING:
            wanted = True  # discarding until the client closes
        else:
            # IDLE, HEAD: a head bigger than the cap is refused as it comes. HANDLING, RESPONDING: reading ahead,
            # one head at most, notices a client that hangs up while its request waits or its stream flows;
            # the next request is parsed only once this response is out (and drained, see _drain). Nothing
            # is read after a broken body.
            wanted = self._body_error is None and len(self.buf) <= self.limits.max_header_bytes
        if wanted is self._reading_paused and self.transport is not None:
            self._reading_paused = not wanted
            if wanted:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # ---- request head ------------------------------------------------------------------------
    def _try_head(self) -> None:
        buf = self.buf
        limits = self.limits
        end = find_head_end(buf, self._scanned)
        if end < 0:
            if len(buf) > limits.max_header_bytes:
                self._write_error_and_close(431, "Request header block too large", "headers_too_large")
                return
            self._scanned = max(0, len(buf) - 3)  # the end's first bytes may be at the very end
            if self.phase is IDLE:
                self._to(HEAD)  # a head coming in pieces: from now on it has the header timeout
            return
        self._scanned = 0
        if end - 4 > limits.max_header_bytes:
            self._write_error_and_close(431, "Request header block too large", "headers_too_large")
            return
        try:
            head = parse_head(bytes(buf[: end - 4]), limits.max_headers)
        except ProtocolError as e:
            self._write_error_and_close(e.status, e.message, e.code)
            return
        del buf[:end]  # consumed in place: CPython drops a bytearray's prefix without copying the rest
        if head.content_length is not None and head.content_length > limits.max_body:
            self._write_error_and_close(
                413, f"Request body exceeds the limit of {limits.max_body} bytes", "body_too_large", path=head.path
            )
            return
        self._start_request(head)

    def _start_request(self, head: RequestHead) -> None:
        if head.chunked:
            self._decoder = ChunkedDecoder(self.limits.max_body)
        elif head.content_length:
            self._decoder = LengthDecoder(head.content_length)
        else:
            self._decoder = None
        self._body_error = None
        self._body_waiter = None
        self.task = self.loop.create_task(self._handle(Request(head, self)))
        # A body that came with its head needs no body deadline: it is read before choosing the phase.
        self._to(HANDLING if self._decoder is None or self._body_read() else BODY)

    # ---- request body ------------------------------------------------------------------------
    def _body_read(self) -> bool:
        """Take the body's bytes from the buffer; True once the body is complete (or broken)."""
        decoder, buf = self._decoder, self.buf
        assert decoder is not None
        if not buf:
            return False
        try:
            used = decoder.feed(buf)
        except ProtocolError as e:
            self._body_error = e
            buf.clear()  # after a broken body, nothing that follows can be trusted as a request
            return True
        del buf[:used]
        return decoder.done

    def _end_body(self) -> None:
        self._to(HANDLING)
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_body(self, head: RequestHead, limit: int | None) -> bytes:
        max_body = self.limits.max_body
        limit = max_body if limit is None else min(limit, max_body)
        if self.phase is BODY:
            assert self._decoder is not None and self.transport is not None
            if self._body_waiter is None:
                self._body_waiter = self.loop.create_future()
                if head.expect_continue and not self._decoder.body:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._flow()
            await self._body_waiter
        elif self.phase is CLOSED:
            raise ConnectionResetError("client disconnected")
        if self._body_error is not None:
            err = self._body_error
            raise HttpError(err.status, err.message, code=err.code)
        data = bytes(self._decoder.body) if self._decoder is not None else b""
        if len(data) > limit:
            raise HttpError(413, f"Request body exceeds the limit of {limit} bytes", code="body_too_large")
        return data

    # ---- handling and responding -------------------------------------------------------------
    async def _handle(self, request: Request) -> None:
        server = self.server
        server.in_flight += 1
        try:
            response = await self._call_handler(request)
            if self.phase is not BODY and self.phase is not HANDLING:
                return  # the client went away meanwhile
            stream = isinstance(response, StreamResponse)
            # HTTP/1.0 has no chunked coding: a stream's end is the connection's end (RFC 9112 §6.3).
            close = self._must_close(request) or (stream and request.version == "1.0")
            self._to(RESPONDING)
            if isinstance(response, StreamResponse):
                await self._send_stream(request, response, close)
            else:
                self._send(request, response, close)
                if self._writing_paused:  # a client that pipelines and never reads: wait before the next one
                    await self._drain()
            self._finish(request, response.status, close)
        except (asyncio.CancelledError, ConnectionError):
            self._access_log(request, 499)
            if self.phase is RESPONDING:
                self.abort()  # a response cut short must not look complete
        finally:
            server.in_flight -= 1
            if server.in_flight == 0 and server.idle_event is not None:
                server.idle_event.set()

    async def _call_handler(self, request: Request) -> Response | StreamResponse:
        try:
            return await self.server.handler(request)
        except HttpError as e:
            return Response(e.status, self.server.error_body(request.path, e), list(e.headers))
        except Exception as e:  # a bug must not leak a traceback to the client
            if self.closed:
                raise ConnectionResetError("client disconnected") from e
            self.server.log.error(
                "handler_error", requestId=request.request_id, path=request.path,
                error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8),
            )
            internal = HttpError(500, "Internal server error", code="internal_error")
            return Response(500, self.server.error_body(request.path, internal))

    def _must_close(self, request: Request) -> bool:
        # A body the handler left unread (or a broken one) leaves the connection at an unknown offset.
        return (not request.keep_alive or self.phase is BODY or self._body_error is not None
                or self.server.closing)

    def _head_bytes(self, request: Request, status: int, content_type: str, headers: list[tuple[str, str]],
                    framing: bytes, close: bool) -> bytes:
        connection = CLOSE if close else KEEP_ALIVE if request.version == "1.0" else b""
        return response_head(status, content_type, framing, headers, connection, request.request_id)

    def _send(self, request: Request, response: Response, close: bool) -> None:
        body = response.body
        head = self._head_bytes(
            request, response.status, response.content_type, response.headers,
            b"Content-Length: %d\r\n" % len(body), close,
        )
        assert self.transport is not None
        self.transport.write(head if request.method == "HEAD" else head + body)

    async def _send_stream(self, request: Request, response: StreamResponse, close: bool) -> None:
        chunked = request.version != "1.0"
        head = self._head_bytes(
            request, response.status, response.content_type, response.headers,
            b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n" if chunked else b"Cache-Control: no-cache\r\n",
            close,
        )
        transport = self.transport
        assert transport is not None
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
                if transport.is_closing():
                    break
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._writing_paused:
                    await self._drain()
            if chunked and not transport.is_closing():
                transport.write(b"0\r\n\r\n")
        except ConnectionError:
            raise  # the client went away (or stopped reading and was cut off)
        except Exception as e:
            # Headers are gone, so no error reply is possible: cut the connection so the client
            # cannot mistake a truncated body for a complete one.
            self.server.log.warning("stream_aborted", requestId=request.request_id, error=f"{type(e).__name__}: {e}")
            self.abort()
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _drain(self) -> None:
        """Wait while the transport holds more than its high-water mark (writing is paused), that is while
        the client does not read; the write timeout (RESPONDING's deadline) cuts a client that never does."""
        self._drain_waiter = self.loop.create_future()
        self._arm(self.limits.write_timeout)
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
            self._deadline = None

    def _finish(self, request: Request, status: int, close: bool) -> None:
        self._access_log(request, status)
        if self.phase is not RESPONDING or self.transport is None or self.transport.is_closing():
            return
        if close:
            self.close()
            return
        self.task = None
        self._to(IDLE)
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
        """A final error reply to a request no handler answered (or to a connection over the cap); once the
        head named a ``path``, in the dialect of the API behind it."""
        if self.transport is not None and self.phase in (IDLE, HEAD, BODY):
            if path is None:
                body = dumps(error_payload(status, message, code))
            else:
                body = self.server.error_body(path, HttpError(status, message, code=code))
            framing = b"Content-Length: %d\r\n" % len(body)
            self.transport.write(response_head(status, JSON, framing, headers or [], CLOSE) + body)
        self.close()

    def close(self) -> None:
        """Close after the last reply. Closing a socket with unread input makes the kernel send a reset,
        which can destroy the reply before the client reads it (a 413 while the body is still coming).
        So: send FIN, keep reading and discarding for a moment, and close when the client does."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.phase in (CLOSING, CLOSED):
            return
        self._to(CLOSING)
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the peer reset the connection already (ENOTCONN): nothing left to say goodbye to
            transport.abort()

    def abort(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abort()

    # ---- the deadline --------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        """Set the connection's one deadline. The timer handle is reused: moving a deadline later costs
        a float store, and an early firing re-arms itself (requests on a keep-alive connection would
        otherwise create and cancel two timers each)."""
        loop = self.loop
        deadline = self._deadline = loop.time() + seconds
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.phase is CLOSED:
            return
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._on_timeout)
            return
        self._deadline = None
        phase = self.phase
        if phase is IDLE:
            self.close()
        elif phase is HEAD:
            self._write_error_and_close(408, "Timed out waiting for headers", "request_timeout")
        elif phase is BODY:
            if self.task is not None and not self.task.done():
                self.task.cancel()
            self._write_error_and_close(408, "Timed out waiting for the request body", "request_timeout")
        else:
            self.abort()  # RESPONDING: the client stopped reading; CLOSING: it never closed its end
