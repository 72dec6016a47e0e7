"""Response heads as bytes: the status line, the header fields, the connection's fate."""

from __future__ import annotations

import re
from http import HTTPStatus

_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus
}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # C0 controls but HTAB, and DEL
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"  # an HTTP/1.0 client assumes close unless told (RFC 9112 §C.2.2)


def status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("ascii")


def field_value(value: str) -> bytes:
    """A header value as it may go on the wire, whatever a handler put in it: CR, LF and NUL would end or
    split the head (response splitting, RFC 9112 §11.1; RFC 9110 §5.5 forbids them), other controls and
    DEL are not field characters either (strict clients such as h11 refuse the response), so all are
    dropped; a character latin-1 cannot carry becomes "?"."""
    if _CONTROL.search(value) is not None:
        value = _CONTROL.sub("", value)
    return value.encode("latin-1", "replace")


def response_head(status: int, content_type: str, framing: bytes, headers: list[tuple[str, str]],
                  connection: bytes = b"", request_id: str = "") -> bytes:
    """The whole head, blank line included. ``framing`` is the Content-Length or Transfer-Encoding line(s);
    ``connection`` is ``CLOSE``, ``KEEP_ALIVE`` or nothing (an HTTP/1.1 keep-alive); ``request_id`` is
    checked where it is made (``messages.Request``). Every other value goes through ``field_value``, except
    that values with nothing to clean (one search over them all says so) are encoded as they are."""
    if _CONTROL.search(content_type + "".join([value for _, value in headers])) is None:
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1", "replace")
        content = content_type.encode("latin-1", "replace")
    else:
        fields = b"".join([name.encode("latin-1", "replace") + b": " + field_value(value) + b"\r\n"
                           for name, value in headers])
        content = field_value(content_type)
    rid = b"X-Request-Id: " + request_id.encode("ascii") + b"\r\n" if request_id else b""
    return b"".join((status_line(status), b"Content-Type: ", content, b"\r\n", framing, rid, fields, connection,
                     b"\r\n"))
