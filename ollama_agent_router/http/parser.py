"""HTTP/1.1 request parsing with no I/O: bytes in, a request head or a decoded body out.

Kept free of sockets so unit tests and fuzzers can feed it bytes. The rules are strict on purpose:
anything that could be read two ways by two parsers (request smuggling) is a 400 and the
connection is closed, rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Field values: visible ASCII, obs-text, space and tab. NUL, CR, LF and other controls are refused.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Request targets: origin-form only, printable ASCII without spaces.
_TARGET = re.compile(rb"/[\x21-\x7e]*\Z")
# A chunk-size line: up to 16 hex digits, optional extensions (no CR, LF or NUL), CRLF.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n\x00]{0,4000})?\r\n")
# The whole field block in one C-speed pass: token, colon, then a value free of NUL, CR, LF and controls.
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*(?:\r\n|\Z))*\Z")
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})


class ProtocolError(Exception):
    """A request we refuse to interpret. The connection is closed after the error reply."""

    def __init__(self, status: int, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    path: str  # raw, still percent-encoded, without the query
    query: str
    version: str  # "1.1" or "1.0"
    headers: dict[str, str]  # lower-cased names; repeated fields joined with ", "
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line that ends the head, or -1."""
    i = buf.find(b"\r\n\r\n", start)
    return -1 if i < 0 else i + 4


def parse_head(block: bytes, max_headers: int = 100) -> RequestHead:
    """Parse a request head (request line and fields, without the final blank line)."""
    # Tolerate stray CRLFs before a request line (RFC 9112 §2.2), nothing else.
    while block.startswith(b"\r\n"):
        block = block[2:]
    lines = block.split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "Malformed request line")
    method_b, target_b, version_b = parts
    if not _TOKEN.match(method_b):
        raise ProtocolError(400, "Malformed request method")
    if version_b == b"HTTP/1.1":
        version = "1.1"
    elif version_b == b"HTTP/1.0":
        version = "1.0"
    elif version_b.startswith(b"HTTP/"):
        raise ProtocolError(505, "Only HTTP/1.0 and HTTP/1.1 are spoken here", "http_version_unsupported")
    else:
        raise ProtocolError(400, "Malformed request line")
    if not _TARGET.match(target_b):
        if not (target_b == b"*" and method_b == b"OPTIONS"):
            raise ProtocolError(400, "Malformed request target")
    field_lines = lines[1:]
    if len(field_lines) > max_headers:
        raise ProtocolError(431, "Too many request headers", "headers_too_large")
    nl = block.find(b"\r\n")
    if nl >= 0 and not _FIELDS.match(block, nl + 2):
        raise ProtocolError(400, _field_problem(field_lines))

    headers: dict[str, str] = {}
    content_lengths: list[bytes] = []
    transfer_encodings: list[bytes] = []
    hosts = 0
    for line in field_lines:
        name_b, _, value_b = line.partition(b":")
        value_b = value_b.strip(b" \t")
        name = name_b.decode("ascii").lower()
        if name in _FRAMING:
            if name == "content-length":
                content_lengths.append(value_b)
            elif name == "transfer-encoding":
                transfer_encodings.append(value_b)
            else:
                hosts += 1
        value = value_b.decode("latin-1")
        prior = headers.get(name)
        headers[name] = value if prior is None else prior + ", " + value

    if hosts > 1:
        raise ProtocolError(400, "Multiple Host headers")
    content_length: int | None = None
    chunked = False
    if transfer_encodings:
        if content_lengths:
            raise ProtocolError(400, "Both Content-Length and Transfer-Encoding")
        if version == "1.0" or len(transfer_encodings) != 1 or transfer_encodings[0].lower() != b"chunked":
            raise ProtocolError(400, "Unsupported Transfer-Encoding")
        chunked = True
    elif content_lengths:
        if any(v != content_lengths[0] for v in content_lengths) or not content_lengths[0].isdigit():
            raise ProtocolError(400, "Invalid Content-Length")
        if len(content_lengths[0]) > 18:
            raise ProtocolError(413, "Request body too large", "body_too_large")
        content_length = int(content_lengths[0])

    connection = headers.get("connection", "").lower()
    if version == "1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    target = target_b.decode("ascii")
    path, _, query = target.partition("?")
    return RequestHead(
        method=method_b.decode("ascii"),
        target=target,
        path=path,
        query=query,
        version=version,
        headers=headers,
        keep_alive=keep_alive,
        content_length=content_length,
        chunked=chunked,
        expect_continue=headers.get("expect", "").lower() == "100-continue",
    )


def _field_problem(lines: list[bytes]) -> str:
    """Name what is wrong with a field block that failed the one-pass check (error path only)."""
    for line in lines:
        if not line:
            return "Malformed header block"
        if line[0] in (0x20, 0x09):
            return "Obsolete line folding is not accepted"
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            return "Malformed header field"
        if _BAD_VALUE.search(value):
            return "Invalid character in header value"
    return "Malformed header block"


class ChunkedDecoder:
    """Incremental decoder of a chunked body, capped at ``limit`` decoded bytes.

    Decoded bytes accumulate in ``body``; a consumer that streams them (the upstream client) empties it
    as it goes, and the limit still counts everything decoded.
    """

    _MAX_LINE = 4096  # a chunk-size line with extensions, or one trailer line
    _MAX_TRAILERS = 16 * 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.decoded = 0
        self.done = False
        self._buf = bytearray()
        self._need = 0  # bytes of chunk data still to come
        self._state = "size"  # size | data | data_end | trailer
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return what is left over after the body ended (the next request's bytes)."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        body = self.body
        while not self.done:
            state = self._state
            if state == "size":
                m = _CHUNK_LINE.match(buf, pos)
                if m is None:
                    end = buf.find(b"\r\n", pos)
                    if end >= 0 or n - pos > self._MAX_LINE:
                        raise ProtocolError(400, "Malformed chunk size")
                    break
                size = int(m.group(1), 16)
                self.decoded += size
                if self.decoded > self.limit:
                    raise ProtocolError(413, "Request body too large", "body_too_large")
                pos = m.end()
                if size == 0:
                    self._state = "trailer"
                elif n - pos >= size + 2:  # the whole chunk is here: the common case, done in one step
                    if buf[pos + size : pos + size + 2] != b"\r\n":
                        raise ProtocolError(400, "Malformed chunked body")
                    body += buf[pos : pos + size]
                    pos += size + 2
                else:
                    self._need = size
                    self._state = "data"
            elif state == "data":
                take = min(self._need, n - pos)
                if take == 0:
                    break
                body += buf[pos : pos + take]
                pos += take
                self._need -= take
                if self._need == 0:
                    self._state = "data_end"
            elif state == "data_end":
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError(400, "Malformed chunked body")
                pos += 2
                self._state = "size"
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > self._MAX_LINE:
                        raise ProtocolError(400, "Chunked trailer line too long")
                    break
                self._trailer_line(bytes(buf[pos:end]))
                pos = end + 2
        rest = bytes(buf[pos:])
        if self.done:
            self._buf = bytearray()
            return rest
        self._buf = bytearray(rest)
        return b""

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._MAX_TRAILERS or _BAD_VALUE.search(line) or b":" not in line:
            raise ProtocolError(400, "Malformed chunked trailer")
