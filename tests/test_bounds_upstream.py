"""What Ollama (or whatever answers at ollama.baseUrl) sends back is bounded and checked (issue 15, items 3,
11, 12 and 14): reply size, encoding and JSON, interim 1xx heads, and credentials in the base URL."""

from __future__ import annotations

import base64
import gzip
import json
import time

import pytest
from bounds_support import COMPLETION, RawStack, RawUpstream, reply
from conftest import VIBE, chat_body, wait_for

CHAT = "/v1/chat/completions"


@pytest.fixture
def raw_stack():
    stacks: list[RawStack] = []

    def factory(script: dict, override: dict | None = None, **kw) -> RawStack:
        trickle = kw.pop("trickle", b"")
        s = RawStack(RawUpstream(script, trickle), override, **kw).start()
        stacks.append(s)
        return s

    yield factory
    for s in stacks:
        s.stop()


def kong_body() -> dict:
    return {"selectedModel": VIBE, "request": chat_body("hi")}


def job_error(stack: RawStack) -> dict:
    r = stack.request("POST", CHAT, chat_body("hi", mode="async"))
    assert r.status == 202, r
    job_id = r.json()["id"]
    job = wait_for(lambda: (j := stack.request("GET", f"/v1/jobs/{job_id}").json())["status"] == "failed" and j)
    return json.loads(job["error_json"])


# ---- 12: an interim 1xx head was taken for the final one, and the request hung until its timeout ----------

def test_interim_1xx_heads_are_skipped(raw_stack):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
    stack = raw_stack({CHAT: interim + reply(COMPLETION)})
    started = time.monotonic()
    r = stack.request("POST", CHAT, chat_body("hi"))
    assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == "hi", r
    assert time.monotonic() - started < 2


def test_a_101_is_a_broken_reply_not_a_hang(raw_stack):
    stack = raw_stack({CHAT: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"})
    r = stack.request("POST", CHAT, chat_body("hi"))
    assert r.status == 502 and r.json()["error"]["code"] == "upstream_error", r


# ---- 11: a gzip or non-JSON 200 was passed on as a 200 -----------------------------------------------------

def test_identity_is_asked_for_and_a_gzip_200_is_a_502(raw_stack):
    stack = raw_stack({CHAT: reply(gzip.compress(COMPLETION), headers="Content-Encoding: gzip\r\n")})
    r = stack.request("POST", CHAT, chat_body("hi"))
    assert r.status == 502 and r.json()["error"]["code"] == "upstream_bad_reply", r
    chat_heads = [h for h in stack.upstream.heads if h.startswith(f"POST {CHAT}")]
    assert chat_heads and all("\r\nAccept-Encoding: identity\r\n" in h for h in chat_heads)


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"choices": [', b"\xff\xfe{}"])
def test_a_200_that_is_not_json_is_a_502_on_every_door(raw_stack, body):
    stack = raw_stack({CHAT: reply(body, headers="Content-Type: text/html\r\n")})
    for path, payload in ((CHAT, chat_body("hi")), ("/v1/router/execute", kong_body())):
        r = stack.request("POST", path, payload)
        assert r.status == 502 and r.json()["error"]["code"] == "upstream_bad_reply", (path, r)
    assert job_error(stack)["code"] == "upstream_bad_reply"


def test_a_probe_that_is_not_json_is_a_502(raw_stack):
    stack = raw_stack({"/api/version": reply(b"<html></html>")})
    r = stack.request("GET", "/api/version")
    assert r.status == 502 and r.json()["code"] == "upstream_bad_reply", r  # Ollama's error shape under /api


# ---- 3: replies were read with no size limit -------------------------------------------------------------

HUGE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
ENDLESS_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("head, trickle", [(HUGE_HEAD, b"x" * 4096), (ENDLESS_HEAD, b"1000\r\n" + b"x" * 4096 + b"\r\n"),
                                           (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x" * 4096)])
def test_a_reply_over_max_reply_bytes_is_a_502(raw_stack, head, trickle):
    stack = raw_stack({CHAT: head}, {"ollama": {"maxReplyBytes": "64kb"}}, trickle=trickle)
    started = time.monotonic()
    for path, payload in ((CHAT, chat_body("hi")), ("/v1/router/execute", kong_body())):
        r = stack.request("POST", path, payload)
        assert r.status == 502 and r.json()["error"]["code"] == "upstream_reply_too_large", (path, r)
    assert job_error(stack)["code"] == "upstream_reply_too_large"
    assert time.monotonic() - started < 5  # never the 10 s request timeout


def test_probe_replies_have_a_tight_cap(raw_stack):
    stack = raw_stack({"/api/version": HUGE_HEAD})
    started = time.monotonic()
    r = stack.request("GET", "/api/version")
    assert r.status == 502 and r.json()["code"] == "upstream_reply_too_large", r  # Ollama's error shape under /api
    assert time.monotonic() - started < 2


# ---- 14: credentials in ollama.baseUrl leaked into bodies and logs, and were not used ------------------------

def test_base_url_credentials_are_used_and_never_shown(raw_stack):
    stack = raw_stack({CHAT: reply(COMPLETION)}, credentials="ollama:s3cr%40t@")
    assert stack.request("POST", CHAT, chat_body("hi")).status == 200
    token = base64.b64encode(b"ollama:s3cr@t").decode()
    assert all(f"\r\nAuthorization: Basic {token}\r\n" in h for h in stack.upstream.heads)
    runtime = stack.request("GET", "/v1/router/runtime").json()
    assert runtime["ollama"]["baseUrl"] == f"http://***@127.0.0.1:{stack.upstream.port}"
    stack.call(stack.upstream.stop())
    r = stack.request("POST", CHAT, chat_body("hi"))
    assert r.status == 503 and r.json()["error"]["code"] == "ollama_unreachable", r
    wait_for(lambda: any("ollama_unreachable" in line for line in stack.log_lines))
    for text in (r.body.decode(), json.dumps(runtime), "".join(stack.log_lines)):
        assert "s3cr" not in text and "//ollama:" not in text
