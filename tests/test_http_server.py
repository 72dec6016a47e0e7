"""The HTTP server over real sockets and over a hand-driven transport: what the parser's verdicts become
on the wire, flow control, and the response heads it writes."""

from __future__ import annotations

import json

import pytest
from http_support import raw_exchange


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
    out, closed = raw_exchange(stack.port, b"GET /health " + version + b"\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 %d " % status), out
    assert json.loads(body)["error"]["code"] == code


def test_http_1_1_without_host_is_400_and_http_1_0_needs_none(stack):
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1  # RFC 9112 §3.2
    assert b"Missing Host header" in out
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 200 ")
    out, closed = raw_exchange(stack.port, b"GET /health HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 200 ")  # a higher minor version is read as 1.1 (RFC 9110 §2.5)
