"""What a handler sees and returns: the request, the two kinds of response, and the server's limits.

Kept apart from the connection that produces them, so the route handlers depend on these types only.
"""

from __future__ import annotations

import random
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, Union

from ..access.principal import ANONYMOUS
from ..errors import HttpError
from ..jsonutil import dumps
from .parser import RequestHead

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
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


def normalize_ip(ip: str) -> str:
    """Socket peer addresses with IPv4-mapped IPv6 (``::ffff:1.2.3.4``) reduced to plain IPv4."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class Channel(Protocol):
    """What a request needs from the connection it came on (``http.connection.Connection``)."""

    client_ip: str
    ssl_object: ssl.SSLObject | None

    async def read_body(self, head: RequestHead, limit: int | None) -> bytes: ...


class Request:
    """One parsed request. ``log`` collects fields for the access log line (e.g. the selected model)."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers", "keep_alive",
        "client_ip", "request_id", "started", "log", "principal", "extra_headers", "_head", "_channel",
    )

    def __init__(self, head: RequestHead, channel: Channel) -> None:
        self._head = head
        self._channel = channel
        self.method = head.method
        self.target = head.target
        self.path = head.path
        self.query = head.query
        self.version = head.version
        self.headers = head.headers
        self.keep_alive = head.keep_alive
        self.client_ip = channel.client_ip
        rid = head.headers.get("x-request-id")
        self.request_id = rid if rid and _REQUEST_ID.match(rid) else f"{random.getrandbits(64):016x}"
        self.started = time.perf_counter()
        self.log: dict[str, Any] = {}
        self.principal = ANONYMOUS  # set by access control before the handler runs
        self.extra_headers: list[tuple[str, str]] = []  # added to whatever response follows (rate-limit headers)

    @property
    def tls(self) -> ssl.SSLObject | None:
        return self._channel.ssl_object

    async def body(self, limit: int | None = None) -> bytes:
        """The whole request body (Content-Length or chunked), at most ``limit`` bytes, else 413."""
        return await self._channel.read_body(self._head, limit)


Handler = Callable[[Request], Awaitable[Union[Response, StreamResponse]]]
