"""HTTP/1.1 request parsing with no I/O: bytes in, a request head or a decoded body out.

Kept free of sockets so unit tests and fuzzers can feed it bytes. The rules are strict on purpose:
anything that could be read two ways by two parsers (request smuggling) is a 400 and the
connection is closed, rather than guessed at. Each rule names the section of RFC 9112 (HTTP/1.1) or
RFC 9110 (HTTP semantics) it comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9110 §5.5: field-value = *field-content of VCHAR, obs-text, SP and HTAB. NUL, CR, LF and the other
# controls are refused (the RFC allows replacing CR, LF and NUL with SP; refusing is the safer choice).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 §3.2.1: origin-form, printable ASCII without spaces (the absolute-form of §3.2.2 is refused:
# nobody sends it to an origin server, and a second authority in the target invites confusion).
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
_TARGET = re.compile(rb"/[\x21-\x7e]*\Z")
# RFC 9112 §7.1: chunk-size = 1*HEXDIG (at most 16: 64 bits), then chunk-ext (§7.1.1: BWS ";" ...,
# checked only for what must never be in a line, and kept within a line's length), then CRLF.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n\x00]{0,4000})?\r\n")
# The whole field block in one C-speed pass (RFC 9112 §5: field-name ":" OWS field-value OWS, each line
# ended by CRLF): a token, the colon with no whitespace before it (§5.1), then a value free of NUL, CR, LF
# and controls (RFC 9110 §5.5). A line starting with whitespace (obs-fold, §5.2) fails the token.
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
    """Index just past the blank line that ends the head (RFC 9112 §2.1), or -1. ``start`` lets a caller
    resume a search where the previous one gave up, so a head that arrives in pieces is scanned once."""
    i = buf.find(b"\r\n\r\n", start)
    return -1 if i < 0 else i + 4


def parse_head(block: bytes, max_headers: int = 100) -> RequestHead:
    """Parse a request head (request line and fields, without the final blank line)."""
    # RFC 9112 §2.2: a server SHOULD ignore empty lines received before the request-line; nothing else.
    if block.startswith(b"\r\n"):
        start = 2
        while block.startswith(b"\r\n", start):
            start += 2
        block = block[start:]
    lines = block.split(b"\r\n")
    method_b, target_b, version = _request_line(lines[0])
    field_lines = lines[1:]
    if len(field_lines) > max_headers:
        raise ProtocolError(431, "Too many request headers", "headers_too_large")  # RFC 6585 §5
    nl = block.find(b"\r\n")
    if nl >= 0 and not _FIELDS.match(block, nl + 2):
        raise ProtocolError(400, _field_problem(field_lines))
    headers, hosts, content_lengths, transfer_encodings = _read_fields(field_lines)
    # RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one, is a 400.
    if hosts > 1:
        raise ProtocolError(400, "Multiple Host headers")
    if not hosts and version == "1.1":
        raise ProtocolError(400, "Missing Host header")
    content_length: int | None = None
    chunked = False
    if content_lengths or transfer_encodings:  # RFC 9112 §6.3 rule 6: without either, there is no body
        content_length, chunked = _framing(version, content_lengths, transfer_encodings)
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive" (§C.2.2).
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "1.1" else "keep-alive" in connection
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
        # RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
        expect_continue=version == "1.1" and headers.get("expect", "").lower() == "100-continue",
    )


def _request_line(line: bytes) -> tuple[bytes, bytes, str]:
    """(method, target, version) of a request-line (RFC 9112 §3)."""
    # RFC 9112 §3: request-line = method SP request-target SP HTTP-version, single spaces only.
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "Malformed request line")
    method_b, target_b, version_b = parts
    # RFC 9112 §3.1 (RFC 9110 §9.1): method = token.
    if not _TOKEN.match(method_b):
        raise ProtocolError(400, "Malformed request method")
    version = "1.1" if version_b == b"HTTP/1.1" else _version(version_b)
    # RFC 9112 §3.2: origin-form, or the asterisk-form for a server-wide OPTIONS (§3.2.4).
    if not _TARGET.match(target_b) and not (target_b == b"*" and method_b == b"OPTIONS"):
        raise ProtocolError(400, "Malformed request target")
    return method_b, target_b, version


def _version(version_b: bytes) -> str:
    """"1.1" or "1.0" for a request-line's HTTP-version."""
    if version_b == b"HTTP/1.0":
        return "1.0"
    # RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT, and HTTP-name is "HTTP", case-sensitive.
    # Anything else is not a version at all: a malformed request line.
    if not _VERSION.match(version_b):
        raise ProtocolError(400, "Malformed HTTP version")
    # RFC 9110 §2.5: a higher minor version of a major we speak is read as the highest minor we know.
    if version_b[5] == ord("1"):
        return "1.1"
    # RFC 9110 §15.6.6: 505 is for a (well-formed) major version the server does not support.
    raise ProtocolError(505, "Only HTTP/1.0 and HTTP/1.1 are spoken here", "http_version_unsupported")


def _read_fields(lines: list[bytes]) -> tuple[dict[str, str], int, list[bytes], list[bytes]]:
    """The field lines of a head that passed the one-pass check: (headers, how many Host lines, the
    Content-Length values, the Transfer-Encoding values)."""
    headers: dict[str, str] = {}
    hosts = 0
    content_lengths: list[bytes] = []
    transfer_encodings: list[bytes] = []
    for line in lines:
        name_b, _, value_b = line.partition(b":")
        value_b = value_b.strip(b" \t")  # RFC 9112 §5.1: OWS around the value is not part of it
        name = name_b.decode("ascii").lower()  # RFC 9110 §5.1: field names are case-insensitive
        if name in _FRAMING:
            if name == "content-length":
                content_lengths.append(value_b)
            elif name == "transfer-encoding":
                transfer_encodings.append(value_b)
            else:
                hosts += 1
        value = value_b.decode("latin-1")  # RFC 9110 §5.5: obs-text is opaque octets
        prior = headers.get(name)
        # RFC 9110 §5.3: repeated field lines combine into one comma-separated value, in order.
        headers[name] = value if prior is None else prior + ", " + value
    return headers, hosts, content_lengths, transfer_encodings


def _framing(version: str, content_lengths: list[bytes], transfer_encodings: list[bytes]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a body that has a framing field, by RFC 9112 §6.3; anything ambiguous is
    refused."""
    if transfer_encodings:
        # RFC 9112 §6.3 rule 3: both framings at once ought to be handled as an error (smuggling, §11.2).
        if content_lengths:
            raise ProtocolError(400, "Both Content-Length and Transfer-Encoding")
        # RFC 9112 §6.1: chunked only, once; Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        if version == "1.0" or len(transfer_encodings) != 1 or transfer_encodings[0].lower() != b"chunked":
            raise ProtocolError(400, "Unsupported Transfer-Encoding")
        return None, True
    # RFC 9110 §8.6: Content-Length = 1*DIGIT; repeated lines only when identical. RFC 9112 §6.3 rule 5:
    # an invalid length is an unrecoverable framing error, a 400 and a close.
    if any(v != content_lengths[0] for v in content_lengths) or not content_lengths[0].isdigit():
        raise ProtocolError(400, "Invalid Content-Length")
    if len(content_lengths[0]) > 18:
        raise ProtocolError(413, "Request body too large", "body_too_large")
    return int(content_lengths[0]), False


def _field_problem(lines: list[bytes]) -> str:
    """Name what is wrong with a field block that failed the one-pass check (error path only)."""
    for line in lines:
        if not line:
            return "Malformed header block"
        if line[0] in (0x20, 0x09):
            return "Obsolete line folding is not accepted"  # RFC 9112 §5.2
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            return "Malformed header field"  # RFC 9112 §5.1: no whitespace before the colon
        if _BAD_VALUE.search(value):
            return "Invalid character in header value"  # RFC 9110 §5.5
    return "Malformed header block"


class LengthDecoder:
    """A body framed by Content-Length (RFC 9112 §6.2): exactly that many bytes."""

    def __init__(self, length: int) -> None:
        self.body = bytearray()
        self._need = length

    @property
    def done(self) -> bool:
        return not self._need

    def feed(self, data: bytes | bytearray) -> int:
        """Take body bytes from the start of ``data``; return how many were used."""
        take = min(self._need, len(data))
        self.body += data[:take]
        self._need -= take
        return take


class ChunkedDecoder:
    """Incremental decoder of a chunked body (RFC 9112 §7.1), capped at ``limit`` decoded bytes.

    Decoded bytes accumulate in ``body``; a consumer that streams them (the upstream client) empties it
    as it goes, and the limit still counts everything decoded. ``feed`` works on the caller's buffer in
    place and says how much of it it used, so bytes after the body are never copied.
    """

    _MAX_LINE = 4096  # a chunk-size line with extensions, or one trailer line
    _MAX_TRAILERS = 16 * 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.decoded = 0
        self.done = False
        self._line = bytearray()  # the start of a line that has not ended yet
        self._need = 0  # bytes of chunk data still to come
        self._crlf = 0  # bytes of the CRLF after chunk data still to come
        self._in_trailer = False  # past the last chunk (RFC 9112 §7.1.2)
        self._trailer_bytes = 0

    def feed(self, data: bytes | bytearray) -> int:
        """Decode from the start of ``data``; return how many bytes were used: all of them, unless the
        body ended inside ``data`` (the rest is the next message's)."""
        pos, n = 0, len(data)
        while not self.done and pos < n:
            if self._need:
                take = min(self._need, n - pos)
                self.body += data[pos : pos + take]
                pos += take
                self._need -= take
                if not self._need:
                    self._crlf = 2
            elif self._crlf:
                pos = self._chunk_end(data, pos)
            elif not self._line and not self._in_trailer and (m := _CHUNK_SIZE.match(data, pos)) is not None:
                size, pos = int(m.group(1), 16), m.end()  # a whole size line, matched in place
                end = pos + size
                if size and data[end : end + 2] == b"\r\n" and self.decoded + size <= self.limit:
                    self.decoded += size  # and the whole chunk with it: the common case, in one step
                    self.body += data[pos:end]
                    pos = end + 2
                else:
                    pos = self._chunk(data, pos, size)
            else:
                line, pos = self._next_line(data, pos)
                if line is None:
                    break
                if self._in_trailer:
                    self._trailer_line(line)
                elif (m := _CHUNK_SIZE.match(line + b"\r\n")) is not None:
                    pos = self._chunk(data, pos, int(m.group(1), 16))
                else:
                    raise ProtocolError(400, "Malformed chunk size")
        return pos

    def _chunk(self, data: bytes | bytearray, pos: int, size: int) -> int:
        """A chunk of ``size`` bytes starts at ``pos``: count it, and take it in one step if it is all here."""
        self.decoded += size
        if self.decoded > self.limit:
            raise ProtocolError(413, "Request body too large", "body_too_large")
        if not size:
            self._in_trailer = True  # RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF
            return pos
        if len(data) - pos < size + 2:
            self._need = size
            return pos
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise ProtocolError(400, "Malformed chunked body")
        self.body += data[pos : pos + size]
        return pos + size + 2

    def _chunk_end(self, data: bytes | bytearray, pos: int) -> int:
        # RFC 9112 §7.1: chunk-data is followed by CRLF, which may arrive a byte at a time.
        want = b"\r\n"[2 - self._crlf :]
        got = data[pos : pos + len(want)]
        if want[: len(got)] != got:
            raise ProtocolError(400, "Malformed chunked body")
        self._crlf -= len(got)
        return pos + len(got)

    def _next_line(self, data: bytes | bytearray, pos: int) -> tuple[bytes | None, int]:
        """The next CRLF-ended line and the position after it; (None, len) when it has not ended yet."""
        if not self._line:
            end = data.find(b"\r\n", pos)
            if 0 <= end <= pos + self._MAX_LINE:
                return bytes(data[pos:end]), end + 2
        # A line split between two feeds (or one too long): gather at most a line's worth of it.
        start = len(self._line)
        self._line += data[pos : pos + self._MAX_LINE + 2 - start]
        end = self._line.find(b"\r\n")
        if end < 0:
            if len(self._line) > self._MAX_LINE:
                raise ProtocolError(400, "Chunk line too long")
            return None, len(data)
        line = bytes(self._line[:end])
        self._line.clear()
        return line, pos + end + 2 - start

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True  # the empty line that ends the trailer section
            return
        # RFC 9112 §7.1.2: trailer fields are field lines; we read and drop them, within a budget.
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._MAX_TRAILERS or _BAD_VALUE.search(line) or b":" not in line:
            raise ProtocolError(400, "Malformed chunked trailer")
