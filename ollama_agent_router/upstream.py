"""The Ollama client: a keep-alive pool of asyncio Protocol connections, with deadlines.

Deadlines are timers that fail the connection (waking its reader with the error) rather than
``wait_for`` wrappers around every read: one timer per exchange, nothing per chunk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from typing import Any, AsyncIterator, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import HttpError
from .http.parser import ChunkedDecoder, ProtocolError
from .jsonutil import dumps


class UpstreamError(Exception):
    """Ollama could not be reached, timed out, or broke the exchange.

    ``kind``: connect | timeout | closed, or, for a reply that arrived but cannot be used, too_large | bad_reply.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def to_http(self, base_url: str) -> HttpError:
        if self.kind == "connect":
            return HttpError(503, f"Ollama is unreachable at {base_url}: {self.message}", code="ollama_unreachable",
                             headers=[("Retry-After", "5")])
        if self.kind == "timeout":
            return HttpError(504, f"Ollama did not answer in time: {self.message}", code="upstream_timeout")
        if self.kind in _UNUSABLE:
            return HttpError(502, f"Ollama's reply cannot be used: {self.message}", code=_UNUSABLE[self.kind])
        return HttpError(502, f"Ollama connection failed: {self.message}", code="upstream_error")


_UNUSABLE = {"too_large": "upstream_reply_too_large", "bad_reply": "upstream_bad_reply"}


class _Timeout(Exception):
    pass


_FIRST_PIECE = 1024  # bytes of a chunked reply decoded and passed on before the rest of the first read
_HIGH_WATER = 256 * 1024  # unread reply bytes at which the connection stops reading (a slow client downstream)
_MAX_HEAD = 64 * 1024
_MAX_INTERIM = 16  # 1xx heads skipped before the final one; more is a broken upstream
PROBE_REPLY_LIMIT = 4 << 20  # /api/ps, /api/tags, /api/version and model loads: small JSON documents
MAX_ERROR_MESSAGE = 2000


class _Conn(asyncio.Protocol):
    """One pooled connection to Ollama. Received bytes collect in ``buf``; a reader waits on ``wait``.

    A deadline or a lost connection is recorded in ``error`` and wakes the reader, so a timer per exchange
    (not a ``wait_for`` per read) bounds the whole reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.error: Exception | None = None
        self.eof = False
        self._waiter: asyncio.Future | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()  # kept: asking again costs a getpid() system call
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = ConnectionResetError(str(exc))
        self._wake()

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Wait for more bytes; raise the recorded error, or IncompleteReadError at the end of the stream."""
        if self.error is not None:
            raise self.error
        if self.eof:
            raise asyncio.IncompleteReadError(b"", None)
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def take(self, n: int | None = None) -> bytes:
        """Remove and return the first ``n`` buffered bytes (all when None)."""
        buf = self.buf
        if n is None or n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if self._paused and len(buf) < _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def usable(self) -> bool:
        return (self.error is None and not self.eof and not self.buf and self.transport is not None
                and not self.transport.is_closing())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An upstream reply whose head has been read. Read the body with ``read`` or ``chunks``, then it
    returns its connection to the pool; ``close`` drops the connection if the body was not consumed."""

    def __init__(self, client: "OllamaClient", conn: _Conn, status: int, headers: dict[str, str],
                 timer: asyncio.TimerHandle | None) -> None:
        self._client = client
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self._timer = timer
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        cl = headers.get("content-length")
        self._length = int(cl) if cl is not None and cl.isdigit() else None
        self._keep_alive = "close" not in headers.get("connection", "").lower()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; more than ``limit`` bytes (the client's ``max_reply_bytes`` by default) is a
        ``too_large`` UpstreamError, raised before the rest is read."""
        limit = self._client.max_reply_bytes if limit is None else limit
        if self._length is not None and self._length > limit:
            self.close()
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        pieces = self.chunks()
        async for piece in pieces:
            size += len(piece)
            if size > limit:
                await pieces.aclose()  # drops the connection now: the rest of the body is not read
                raise _too_large(limit)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each item is everything decoded since the previous one, so bytes that
        arrived together leave together (one write downstream; the first read of a chunked reply in two),
        and nothing waits for more to come."""
        conn = self._conn
        if conn is None:
            return
        ok = False
        try:
            encoding = self.headers.get("content-encoding")
            if encoding is not None and encoding.strip().lower() != "identity":
                # We ask for identity; a compressed body would reach clients as garbage.
                raise UpstreamError("bad_reply", f"the reply is {encoding[:40]}-encoded")
            if self._chunked:
                decoder = ChunkedDecoder(limit=1 << 62)
                # The first read of a fast stream often holds the whole reply: decode a little of it
                # first, so the client's first token does not wait for the decoding of all the others.
                piece: int | None = _FIRST_PIECE
                while True:
                    if conn.buf:
                        data = conn.take(piece)
                        used = decoder.feed(data)
                        piece = None
                        if decoder.body:
                            yield bytes(decoder.body)
                            decoder.body.clear()
                        if decoder.done:
                            if used < len(data) or conn.buf:
                                raise ValueError("bytes after the end of the reply")
                            break
                        if conn.buf:
                            continue
                    await conn.wait()
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    if not conn.buf:
                        await conn.wait()
                    data = conn.take(remaining)
                    remaining -= len(data)
                    yield data
            else:
                self._keep_alive = False
                while True:
                    if conn.buf:
                        yield conn.take()
                    try:
                        await conn.wait()
                    except asyncio.IncompleteReadError:
                        if conn.buf:
                            yield conn.take()
                        break
            ok = True
        except _READ_ERRORS as e:
            raise _read_error(e) from None
        finally:
            self._release(ok)

    def close(self) -> None:
        self._release(False)

    def _release(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if conn is not None:
            self._client._give_back(conn, reusable and self._keep_alive)


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError("too_large", f"the reply is larger than ollama.maxReplyBytes ({limit} bytes)")


class OllamaClient:
    def __init__(self, base_url: str, *, connect_timeout: float = 3.0, pool_size: int = 64,
                 max_reply_bytes: int = 64 << 20) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
        host_port = parts.netloc.rpartition("@")[2]
        # What error messages, logs and status bodies may show: never the credentials of a user:pass@ URL.
        self.display_url = urlunsplit(parts._replace(netloc=("***@" if "@" in parts.netloc else "") + host_port))
        self._auth = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
            self._auth = f"Authorization: Basic {base64.b64encode(pair).decode('ascii')}\r\n"
        self.max_reply_bytes = max_reply_bytes
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")  # kept: "http://h/ollama" + "/api/ps" -> "/ollama/api/ps"
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self._idle: list[_Conn] = []
        self._ssl = ssl.create_default_context() if self.scheme == "https" else None
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        default_port = 443 if self.scheme == "https" else 80
        self._host_header = netloc if self.port == default_port else f"{netloc}:{self.port}"

    async def _connect(self) -> _Conn:
        # asyncio.wait rather than wait_for: the latter can lose a cancellation in Python 3.10/3.11.
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.create_connection(_Conn, self.host, self.port, ssl=self._ssl))
        try:
            await asyncio.wait((task,), timeout=self.connect_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            raise UpstreamError("connect", f"connect timed out after {self.connect_timeout:g}s")
        try:
            _, conn = task.result()
        except OSError as e:
            raise UpstreamError("connect", e.strerror or str(e)) from None
        return conn

    def _give_back(self, conn: _Conn, reusable: bool) -> None:
        if reusable and conn.usable() and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:
            conn.close()

    def _payload(self, method: str, path: str, body: bytes | None, content_type: str,
                 headers: Sequence[tuple[str, str]]) -> bytes:
        """The request's bytes: head and body. Identity encoding, so a reply is never compressed."""
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n",
                *(f"{name}: {value}\r\n" for name, value in headers)]
        if body is not None:
            head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n")
        head.append(f"{self._auth}Accept: */*\r\nAccept-Encoding: identity\r\n\r\n")
        return "".join(head).encode("latin-1") + (body or b"")

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout: float | None = None,
        first_byte_timeout: float | None = None,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> UpstreamResponse:
        """Send one request and read the response head. ``timeout`` bounds the whole exchange, body
        included; ``first_byte_timeout`` bounds the wait for the head. ``headers``: parsed ones (no CR/LF)."""
        loop = asyncio.get_running_loop()
        payload = self._payload(method, path, body, content_type, headers)
        deadline = None if timeout is None else loop.time() + timeout
        # A pooled connection may have been closed by Ollama while idle; that failure is retried once on a fresh one.
        while True:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            if reused and not conn.usable():
                conn.close()
                continue
            timer = None
            if deadline is not None:
                timer = loop.call_at(deadline, conn.fail, _Timeout("total"))
            fb_timer = None
            if first_byte_timeout is not None and (timeout is None or first_byte_timeout < timeout):
                fb_timer = loop.call_later(first_byte_timeout, conn.fail, _Timeout("first byte"))
            try:
                assert conn.transport is not None
                conn.transport.write(payload)
                interim = [0]
                while (head := _final_head(conn, interim)) is None:
                    await conn.wait()
                status, headers = head
            except _Timeout as e:
                conn.close()
                _cancel(timer, fb_timer)
                raise UpstreamError("timeout", f"no reply head before the {e} deadline") from None
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                conn.close()
                _cancel(timer, fb_timer)
                if reused and not conn.buf:
                    continue
                raise UpstreamError("closed", f"connection closed before a reply ({type(e).__name__})") from None
            except ValueError as e:
                conn.close()
                _cancel(timer, fb_timer)
                raise UpstreamError("closed", f"malformed reply head: {e}") from None
            except asyncio.CancelledError:
                conn.close()
                _cancel(timer, fb_timer)
                raise
            _cancel(fb_timer)
            return UpstreamResponse(self, conn, status, headers, timer)

    async def get_json(self, path: str, timeout: float) -> tuple[int, Any]:
        return await self._exchange_json("GET", path, None, timeout)

    async def post_json(self, path: str, obj: Any, timeout: float) -> tuple[int, Any]:
        return await self._exchange_json("POST", path, dumps(obj), timeout)

    async def _exchange_json(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
        """One small request whose whole reply (at most ``PROBE_REPLY_LIMIT``) is read and decoded: a success
        must be JSON (else ``bad_reply``); an error's non-JSON body becomes ``{"raw": ...}`` for its message."""
        resp = await self.request(method, path, body, timeout=timeout)
        try:
            data = await resp.read(PROBE_REPLY_LIMIT)
        finally:
            resp.close()
        return resp.status, json_reply(data) if resp.status < 400 else json_or_raw(data)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_READ_ERRORS = (_Timeout, asyncio.IncompleteReadError, ConnectionError, ValueError, ProtocolError)


def _read_error(e: Exception) -> UpstreamError:
    if isinstance(e, _Timeout):
        return UpstreamError("timeout", "the reply took longer than the request timeout")
    return UpstreamError("closed", f"the reply was cut off ({type(e).__name__})")


def _cancel(*timers: asyncio.TimerHandle | None) -> None:
    for t in timers:
        if t is not None:
            t.cancel()


def _final_head(conn: _Conn, interim: list[int]) -> tuple[int, dict[str, str]] | None:
    """The reply's status and headers once its final head is buffered (None until then), skipping interim
    1xx heads (RFC 9110 §15.2: 100 Continue, 103 Early Hints; ``interim`` counts them across calls). A 101
    is refused: nothing here asks to switch protocols."""
    while (end := conn.buf.find(b"\r\n\r\n")) >= 0:
        status, headers = _parse_response_head(conn.take(end + 4))
        if status == 101:
            raise ValueError("unexpected 101 Switching Protocols")
        if not 100 <= status < 200:
            return status, headers
        interim[0] += 1
        if interim[0] > _MAX_INTERIM:
            raise ValueError(f"more than {_MAX_INTERIM} interim (1xx) replies")
    if len(conn.buf) > _MAX_HEAD:
        raise ValueError("reply head too large")
    return None


def _parse_response_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("bad status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("bad header line")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), headers


def check_json_document(data: bytes) -> None:
    """Refuse (``bad_reply``) a success that is not a JSON object or array from end to end, or not UTF-8:
    an HTML page from a proxy, plain text, a compressed or empty body. The doors that parse the reply parse
    it themselves; this check costs no parse on the hot path."""
    body = data.strip()
    if body[:1] not in (b"{", b"[") or body[-1:] != (b"}" if body[:1] == b"{" else b"]"):
        raise UpstreamError("bad_reply", f"the reply is not a JSON document ({len(data)} bytes)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamError("bad_reply", "the reply is not UTF-8") from None


def json_reply(data: bytes) -> Any:
    """A successful reply's JSON; anything else (HTML from a proxy, a truncated body) is a ``bad_reply``."""
    try:
        return json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        raise UpstreamError("bad_reply", f"the reply is not JSON ({len(data)} bytes)") from None
    except RecursionError:
        raise UpstreamError("bad_reply", "the reply's JSON is nested too deeply") from None


def json_or_raw(data: bytes) -> Any:
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except ValueError:
        return {"raw": data.decode("utf-8", "replace")}


def upstream_http_error(status: int, payload: Any) -> HttpError:
    """Relay an Ollama error with its own message: 4xx keep their status, 503 stays 503, other 5xx become 502."""
    message = upstream_error_message(payload, status)
    extra = {"upstreamStatus": status}
    if status == 503:
        return HttpError(503, message, code="upstream_busy", headers=[("Retry-After", "2")], extra=extra)
    if status >= 500:
        return HttpError(502, message, code="upstream_error", extra=extra)
    code = "model_not_found" if status == 404 else "upstream_rejected"
    return HttpError(status, message, code=code, extra=extra)


def upstream_error_message(payload: Any, status: int) -> str:
    """The human message inside an Ollama error body (native ``{"error": "..."}`` or OpenAI-shaped), cut
    to ``MAX_ERROR_MESSAGE`` characters: it is echoed to clients and kept with failed jobs."""
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, str) and err:
            return err[:MAX_ERROR_MESSAGE]
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:MAX_ERROR_MESSAGE]
        if isinstance(payload.get("raw"), str) and payload["raw"].strip():
            return payload["raw"].strip()[:500]
    return f"Ollama returned HTTP {status}"
