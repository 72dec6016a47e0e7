"""The sans-IO HTTP/1.1 parser: heads, body framing, and the strictness that prevents smuggling."""

import pytest

from ollama_agent_router.http.parser import ChunkedDecoder, ProtocolError, find_head_end, parse_head


def head(text: str):
    raw = text.replace("\n", "\r\n").encode()
    end = find_head_end(raw)
    assert end > 0
    return parse_head(raw[: end - 4])


def test_basic_get():
    h = head("GET /v1/models?x=1 HTTP/1.1\nHost: a\nX-Thing:  v  \n\n")
    assert (h.method, h.path, h.query, h.version) == ("GET", "/v1/models", "x=1", "1.1")
    assert h.headers == {"host": "a", "x-thing": "v"}
    assert h.keep_alive and not h.has_body


def test_keep_alive_rules():
    assert not head("GET / HTTP/1.1\nHost: a\nConnection: close\n\n").keep_alive
    assert not head("GET / HTTP/1.0\n\n").keep_alive
    assert head("GET / HTTP/1.0\nConnection: keep-alive\n\n").keep_alive


def test_content_length_and_chunked():
    assert head("POST / HTTP/1.1\nHost: a\nContent-Length: 12\n\n").content_length == 12
    h = head("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n")
    assert h.chunked and h.has_body


def test_repeated_headers_are_joined():
    assert head("GET / HTTP/1.1\nHost: a\nAccept: a\nAccept: b\n\n").headers["accept"] == "a, b"


@pytest.mark.parametrize(
    "text,status",
    [
        ("GET / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", 400),  # CL + TE
        ("GET / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 6\n\n", 400),  # conflicting CL
        ("GET / HTTP/1.1\nHost: a\nContent-Length: 5, 5\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nContent-Length: -1\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n", 400),
        ("GET / HTTP/1.0\nTransfer-Encoding: chunked\n\n", 400),
        ("GET / HTTP/1.1\nHost: a\nX: a\n folded\n\n", 400),  # obs-fold
        ("GET / HTTP/1.1\nHost: a\nX : a\n\n", 400),  # space before colon
        ("GET / HTTP/1.1\nHost: a\nHost: b\n\n", 400),
        ("GET / HTTP/1.1\n\n", 400),  # HTTP/1.1 without Host
        ("GET /a b HTTP/1.1\nHost: a\n\n", 400),
        ("GET http://evil/ HTTP/1.1\nHost: a\n\n", 400),
        ("GET / FOO/1.1\nHost: a\n\n", 400),
        ("G(T / HTTP/1.1\nHost: a\n\n", 400),
    ],
)
def test_rejects_ambiguous_heads(text, status):
    with pytest.raises(ProtocolError) as e:
        head(text)
    assert e.value.status == status


@pytest.mark.parametrize("raw", [b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb",
                                 b"GET /\x00 HTTP/1.1\r\nHost: a"])
def test_rejects_nul_and_bare_cr(raw):
    with pytest.raises(ProtocolError):
        parse_head(raw)


@pytest.mark.parametrize(
    "version,status",
    [
        (b"HTTP/2.0", 505), (b"HTTP/3.0", 505), (b"HTTP/0.9", 505),  # well-formed, a major we do not speak
        (b"HTTP/one.one", 400), (b"HTTP/1\xa21", 400), (b"HTTP/1.1x", 400), (b"http/1.1", 400),
        (b"HTTP/1.10", 400), (b"HTTP/11", 400), (b"HTTP/", 400), (b"HTTP/1.", 400),
    ],
)
def test_version_malformed_is_400_unsupported_is_505(version, status):
    with pytest.raises(ProtocolError) as e:
        parse_head(b"GET / " + version + b"\r\nHost: a")
    assert e.value.status == status


def test_higher_minor_version_is_read_as_http_1_1():
    assert head("GET / HTTP/1.2\nHost: a\n\n").version == "1.1"  # RFC 9110 §2.5


def test_host_is_required_in_http_1_1_only():
    assert head("GET / HTTP/1.0\n\n").version == "1.0"
    assert head("GET / HTTP/1.1\nHost:\n\n").headers["host"] == ""  # empty is allowed (RFC 9112 §3.2)
    with pytest.raises(ProtocolError) as e:
        head("GET / HTTP/1.1\nX-Host: a\n\n")
    assert e.value.status == 400 and "Host" in e.value.message


def test_too_many_headers():
    block = ("GET / HTTP/1.1\r\nHost: a\r\n" + "".join(f"h{i}: v\r\n" for i in range(100))).encode()
    with pytest.raises(ProtocolError) as e:
        parse_head(block.rstrip(b"\r\n"), max_headers=100)
    assert e.value.status == 431


def test_chunked_decoder_incremental_and_leftover():
    stream = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    dec = ChunkedDecoder(limit=100)
    for i in range(len(stream)):
        used = dec.feed(stream[i : i + 1])
        if dec.done:
            break
    assert dec.done and bytes(dec.body) == b"hello world" and used == 1 and stream[i + 1 :] == b"NEXT"
    whole = ChunkedDecoder(limit=100)
    assert whole.feed(stream) == len(stream) - 4 and whole.done and bytes(whole.body) == b"hello world"


@pytest.mark.parametrize(
    "data,status",
    [
        (b"zz\r\nhello\r\n", 400),
        (b"5\r\nhelloXX0\r\n\r\n", 400),
        (b"fffffffffffffffff\r\n", 400),  # 17 hex digits
        (b"ffffff\r\n", 413),  # over the limit, refused before any data arrives
        (b"-1\r\n", 400),
    ],
)
def test_chunked_decoder_errors(data, status):
    with pytest.raises(ProtocolError) as e:
        ChunkedDecoder(limit=1000).feed(data)
    assert e.value.status == status
