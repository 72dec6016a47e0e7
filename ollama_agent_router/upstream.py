"""The Ollama client: a keep-alive connection pool over asyncio streams, with deadlines.

Deadlines are timers that poison the connection's StreamReader (``set_exception``) rather than
``wait_for`` wrappers around every read: one timer per exchange, nothing per chunk.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from .errors import HttpError
from .jsonutil import dumps


class UpstreamError(Exception):
    """Ollama could not be reached, timed out, or broke the exchange.

    ``kind``: connect | timeout | closed. ``retryable``: safe to try another model (no bytes reached
    the client yet is the caller's business; this only says the failure is not the request's fault).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = True

    def to_http(self, base_url: str) -> HttpError:
        if self.kind == "connect":
            return HttpError(503, f"Ollama is unreachable at {base_url}: {self.message}", code="ollama_unreachable",
                             headers=[("Retry-After", "5")])
        if self.kind == "timeout":
            return HttpError(504, f"Ollama did not answer in time: {self.message}", code="upstream_timeout")
        return HttpError(502, f"Ollama connection failed: {self.message}", code="upstream_error")


class _Timeout(Exception):
    pass


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof() and self.reader.exception() is None


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
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        cl = headers.get("content-length")
        self._length = int(cl) if cl is not None and cl.isdigit() else None
        self._keep_alive = "close" not in headers.get("connection", "").lower()

    async def read(self) -> bytes:
        conn = self._conn
        if conn is not None and self._length is not None and not self._chunked:
            # The common case (a JSON reply with Content-Length): one read, no generator.
            ok = False
            try:
                data = await conn.reader.readexactly(self._length)
                ok = True
                return data
            except _READ_ERRORS as e:
                raise _read_error(e) from None
            finally:
                self._release(ok)
        parts = [piece async for piece in self.chunks()]
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: one item per upstream chunk (chunked) or per socket read."""
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        ok = False
        try:
            if self._chunked:
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    data = await reader.read(min(remaining, 65536))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    yield data
            else:
                self._keep_alive = False
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    yield data
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


class OllamaClient:
    def __init__(self, base_url: str, *, connect_timeout: float = 3.0, pool_size: int = 64) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
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
        task = asyncio.ensure_future(asyncio.open_connection(self.host, self.port, ssl=self._ssl, limit=1 << 20))
        try:
            await asyncio.wait((task,), timeout=self.connect_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            raise UpstreamError("connect", f"connect timed out after {self.connect_timeout:g}s")
        try:
            reader, writer = task.result()
        except OSError as e:
            raise UpstreamError("connect", e.strerror or str(e)) from None
        return _Conn(reader, writer)

    def _give_back(self, conn: _Conn, reusable: bool) -> None:
        if reusable and conn.usable() and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:
            conn.writer.close()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout: float | None = None,
        first_byte_timeout: float | None = None,
        content_type: str = "application/json",
    ) -> UpstreamResponse:
        """Send one request and read the response head. ``timeout`` bounds the whole exchange, body
        included; ``first_byte_timeout`` bounds the wait for the head."""
        loop = asyncio.get_running_loop()
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        if body is not None:
            head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n")
        head.append("Accept: */*\r\n\r\n")
        payload = "".join(head).encode("latin-1") + (body or b"")
        deadline = None if timeout is None else loop.time() + timeout
        # A pooled connection may have been closed by Ollama while idle; that failure is retried once on a fresh one.
        while True:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            if reused and not conn.usable():
                conn.writer.close()
                continue
            timer = None
            if deadline is not None:
                timer = loop.call_at(deadline, _poison, conn.reader, "total")
            fb_timer = None
            if first_byte_timeout is not None and (timeout is None or first_byte_timeout < timeout):
                fb_timer = loop.call_later(first_byte_timeout, _poison, conn.reader, "first byte")
            try:
                conn.writer.write(payload)
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except _Timeout as e:
                conn.writer.close()
                _cancel(timer, fb_timer)
                raise UpstreamError("timeout", f"no reply head before the {e} deadline") from None
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as e:
                conn.writer.close()
                _cancel(timer, fb_timer)
                if reused:
                    continue
                raise UpstreamError("closed", f"connection closed before a reply ({type(e).__name__})") from None
            except asyncio.CancelledError:
                conn.writer.close()
                _cancel(timer, fb_timer)
                raise
            _cancel(fb_timer)
            try:
                status, headers = _parse_response_head(raw)
            except ValueError as e:
                conn.writer.close()
                _cancel(timer)
                raise UpstreamError("closed", f"malformed reply head: {e}") from None
            return UpstreamResponse(self, conn, status, headers, timer)

    async def get_json(self, path: str, timeout: float) -> tuple[int, Any]:
        return await self._exchange_json("GET", path, None, timeout)

    async def post_json(self, path: str, obj: Any, timeout: float) -> tuple[int, Any]:
        return await self._exchange_json("POST", path, dumps(obj), timeout)

    async def _exchange_json(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
        """One small request whose whole reply is read and decoded (a non-JSON reply becomes ``{"raw": ...}``)."""
        resp = await self.request(method, path, body, timeout=timeout)
        try:
            data = await resp.read()
        finally:
            resp.close()
        return resp.status, json_or_raw(data)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.writer.close()


_READ_ERRORS = (_Timeout, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError)


def _read_error(e: Exception) -> UpstreamError:
    if isinstance(e, _Timeout):
        return UpstreamError("timeout", "the reply took longer than the request timeout")
    return UpstreamError("closed", f"the reply was cut off ({type(e).__name__})")


def _poison(reader: asyncio.StreamReader, which: str) -> None:
    reader.set_exception(_Timeout(which))


def _cancel(*timers: asyncio.TimerHandle | None) -> None:
    for t in timers:
        if t is not None:
            t.cancel()


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


def json_or_raw(data: bytes) -> Any:
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except ValueError:
        return {"raw": data.decode("utf-8", "replace")}


def upstream_error_message(payload: Any, status: int) -> str:
    """The human message inside an Ollama error body (native ``{"error": "..."}`` or OpenAI-shaped)."""
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, str) and err:
            return err
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(payload.get("raw"), str) and payload["raw"].strip():
            return payload["raw"].strip()[:500]
    return f"Ollama returned HTTP {status}"
