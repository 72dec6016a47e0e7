"""The fuzzer's requests: hypothesis strategies that build a request with a known framing, so most cases
carry an exact expectation (``Case``); byte-level mutations on top drop it. Used by ``fuzz_http.py``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from drillkit import TEST_CONFIG
from hypothesis import strategies as st

MAX_HEADERS = 40  # the router's limits in the live fuzz, which some cases go over on purpose
MAX_HEADER_BYTES = 8192
FOLLOWER = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
MALFORMED_VERSION, UNSUPPORTED_VERSION = "malformed version", "unsupported version"

PATHS = ["/health", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
         "/v1/models/qwen2.5-coder:7b", "/v1/jobs", "/v1/jobs/job_x", "/v1/jobs/job_x/result", "/v1/router/status",
         "/v1/router/runtime", "/v1/router/execute", "/v1/router/jobs", "/v1/router/route",
         "/v1/router/capabilities", "/api/chat", "/api/generate", "/api/tags", "/api/ps", "/api/version",
         "/api/embed", "/api/show", "/api/pull", "/metrics", "/v1/admin/access/config", "/v1/messages",
         "/v1/messages/count_tokens", "/v1/responses", "/nope"]
BODY_ROUTES = ["/v1/chat/completions", "/api/chat", "/api/generate", "/v1/router/execute", "/v1/router/jobs",
               "/v1/router/route", "/v1/completions", "/v1/embeddings"]
TRICKS = ["//", "/%2e%2e/", "%2F", "/./", "/../", "%00", ";x=1", "?a=b&c=%zz", "#frag", "/", "%", "%c0%af", "%2e"]
TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MODELS = [m["name"] for m in TEST_CONFIG["models"]]


@dataclass
class Case:
    """One request as bytes, with what the router must do with it (unless ``mutated``)."""

    raw: bytes
    head: bytes  # the head block as parse_head sees it (without the blank line)
    method: str
    framing: str
    head_reject: list[str] = field(default_factory=list)  # reasons parse_head must refuse it
    server_reject: list[str] = field(default_factory=list)  # reasons the server refuses it before any handler
    body_reject: list[str] = field(default_factory=list)  # reasons the body decoder refuses it
    follower: bool = False
    mutated: bool = False
    chunked: bool = False
    content_length: int | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.head_reject or self.server_reject)


# ---- strategies ---------------------------------------------------------------------------------------

def weighted(*pairs: tuple[int, Any]) -> st.SearchStrategy:
    return st.sampled_from([value for weight, value in pairs for _ in range(weight)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def chat_bodies(draw) -> bytes:
    content = draw(weighted((6, "Hello there"), (2, "Write a Python function to parse JSON"),
                             (1, "\ud800 lone surrogate"), (1, "x" * 5000), (1, "")))
    body: dict[str, Any] = {"messages": draw(weighted(
        (8, [{"role": "user", "content": content}]), (1, []), (1, [{"content": content}]), (1, "nope"),
        (1, [{"role": "user", "content": [{"type": "text", "text": content}]}])))}
    if draw(st.integers(0, 9)):
        body["model"] = draw(weighted((6, "auto"), (2, MODELS[0]), (1, "no-such-model"), (1, 5)))
    if draw(st.integers(0, 3)) == 0:
        body["stream"] = draw(weighted((4, True), (2, False), (1, "yes")))
    if draw(st.integers(0, 2)) == 0:
        router: dict[str, Any] = {}
        for key, values in (("mode", ["auto", "sync", "async", "bogus", 1]),
                            ("taskType", ["simple_chat", "code_generate", "agentic_reasoning", "nope", None]),
                            ("priority", ["low", "normal", "high", "urgent"]),
                            ("allowAsync", [True, False, "no"]),
                            ("maxQueueTimeMs", [0, 1, 50, -5, 10**12, "x"]),
                            ("maxExecutionTimeMs", [1, 100, -1, 10**15]),
                            ("preferredModels", [MODELS[:2], ["x"], "x"]),
                            ("forbiddenModels", [MODELS[1:], []]),
                            ("requireGpuOnly", [True, False]), ("explain", [True, 3])):
            if draw(st.booleans()):
                router[key] = draw(st.sampled_from(values))
        body["router"] = draw(weighted((5, router), (1, "router"), (1, None)))
    if draw(st.integers(0, 5)) == 0:
        body["tools"] = draw(weighted((2, [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
                                       (1, "tools"), (1, [1, 2])))
    if draw(st.integers(0, 5)) == 0:
        body["extra"] = draw(json_values)
    return json.dumps(body).encode()


@st.composite
def bodies(draw) -> bytes:
    kind = draw(weighted((10, "chat"), (3, "json"), (2, "deep"), (2, "bad-json"), (2, "bad-utf8"), (1, "binary"),
                          (2, "empty"), (1, "kong")))
    if kind == "chat":
        return draw(chat_bodies())
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(150, 3000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = opener * depth + b"1" + closer * depth
        return b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":' + inner + b"}"
    if kind == "bad-json":
        return draw(weighted((1, b"{nope"), (1, b'{"messages":[}'), (1, b"[1,2"), (1, b"\x00"),
                              (1, b'{"a":1}{"b":2}'), (1, b"NaN"), (1, b'{"messages": [{"role": "user", "content": "x"}]')))
    if kind == "bad-utf8":
        return b'{"model":"auto","messages":[{"role":"user","content":"' + draw(
            weighted((1, b"\xff\xfe"), (1, b"\xc0\xaf"), (1, b"\xed\xa0\x80"), (1, b"\x80"))) + b'"}]}'
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "kong":
        return json.dumps({"model": draw(st.sampled_from(MODELS + ["x"])), "taskType": "simple_chat",
                           "request": {"messages": [{"role": "user", "content": "hi"}],
                                       "stream": draw(st.booleans())}}).encode()
    return b""


def _case_of(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


def chunk_encode(body: bytes, cuts: list[int], rng: random.Random, trailers: bool) -> bytes:
    """``body`` in chunked framing, cut at ``cuts``, with the odd extension and upper-case hex."""
    out = bytearray()
    points = sorted({c for c in cuts if 0 < c < len(body)}) + [len(body)]
    start = 0
    for end in points:
        if end == start:
            continue
        size = f"{end - start:X}" if rng.random() < 0.3 else f"{end - start:x}"
        ext = ";ext=1" if rng.random() < 0.1 else ""
        out += f"{size}{ext}\r\n".encode() + body[start:end] + b"\r\n"
        start = end
    out += b"0\r\n" + (b"X-Trailer: 1\r\n" if trailers else b"") + b"\r\n"
    return bytes(out)


@dataclass
class _Draft:
    """A request being drawn, with the reasons it must be refused so far."""

    rng: random.Random
    method: str = ""
    target: bytes = b""
    version: bytes = b""
    body: bytes = b""
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)  # a None value: no colon at all
    head_reject: list[str] = field(default_factory=list)
    body_reject: list[str] = field(default_factory=list)
    framing: str = "none"
    payload: bytes = b""
    chunked: bool = False
    content_length: int | None = None
    fold_at: int | None = None  # the header line followed by an obs-fold line


@st.composite
def cases(draw) -> Case:
    d = _Draft(draw(st.randoms(use_true_random=True)))
    _draw_request_line(draw, d)
    d.body = draw(bodies()) if d.method in ("POST", "PUT", "PATCH") or d.rng.random() < 0.1 else b""
    hostile = _draw_headers(draw, d)
    _draw_framing(draw, d)
    case = _assemble(d, hostile)
    _mutate(draw, case, d.rng)
    return case


def _draw_request_line(draw, d: _Draft) -> None:
    rng = d.rng
    d.method = draw(weighted((10, "POST"), (6, "GET"), (1, "HEAD"), (1, "OPTIONS"), (1, "PUT"), (1, "DELETE"),
                              (1, "PATCH"), (1, "TRACE"), (1, "get"), (1, "G(T"), (1, "")))
    if not d.method or "(" in d.method:
        d.head_reject.append("bad method")
    path = draw(st.sampled_from(BODY_ROUTES if d.method == "POST" and rng.random() < 0.7 else PATHS))
    if rng.random() < 0.15:
        trick = rng.choice(TRICKS)
        cut = rng.randrange(1, len(path) + 1)
        path = path[:cut] + trick + path[cut:]
    d.target = path.encode()
    odd_target = draw(weighted((60, None), (1, b"http://x/health"), (1, b"health"), (1, b"/he\x7flth"),
                                (1, b"/\xff"), (1, b"*"), (1, b"/a b")))
    if odd_target is not None:
        d.target = odd_target
        if odd_target == b"/a b":
            d.head_reject.append("space in target")
        elif not (odd_target == b"*" and d.method == "OPTIONS"):
            d.head_reject.append("bad target")
    d.version = draw(weighted((40, b"HTTP/1.1"), (4, b"HTTP/1.0"), (1, b"HTTP/2.0"), (1, b"HTTP/3.0"),
                               (1, b"HTTP/1.2"), (1, b"http/1.1"), (1, b"HTTP/1.1x"), (1, b"HTTP/one.one"),
                               (1, b"HTTP/1\xa21")))
    if d.version in (b"HTTP/2.0", b"HTTP/3.0"):
        d.head_reject.append(UNSUPPORTED_VERSION)  # well-formed, a major version we do not speak: 505
    elif d.version not in (b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"):  # 1.2 is read as 1.1 (RFC 9110 §2.5)
        d.head_reject.append(MALFORMED_VERSION)  # 400


def _draw_headers(draw, d: _Draft) -> str | None:
    """Ordinary and random fields, and perhaps one hostile one (its kind is returned)."""
    rng, headers = d.rng, d.headers
    if rng.random() < 0.95:
        headers.append((b"Host", b"localhost"))
    elif d.version in (b"HTTP/1.1", b"HTTP/1.2"):
        d.head_reject.append("HTTP/1.1 without Host")
    if headers and rng.random() < 0.03:
        headers.append((b"host", b"y"))
        d.head_reject.append("two Host headers")
    if d.body and rng.random() < 0.8:
        headers.append((b"Content-Type", rng.choice([b"application/json", b"text/plain", b"x/\xff"])))
    for _ in range(draw(st.integers(0, 6))):
        headers.append(draw(weighted(
            (3, (b"Accept", b"*/*")), (2, (b"Connection", b"keep-alive")), (1, (b"Connection", b"close")),
            (1, (b"Connection", b"Keep-Alive, Upgrade")), (1, (b"Expect", b"100-continue")),
            (1, (b"X-Request-Id", b"abc-123")), (1, (b"X-Request-Id", b"\xe9\xe9 bad")),
            (1, (b"Authorization", b"Bearer sk-none")), (1, (b"Authorization", b"Basic \xff\xfe")),
            (1, (b"X-Forwarded-For", b"1.2.3.4, ::ffff:10.0.0.1, nonsense")),
            (1, (b"Origin", b"https://evil.example")), (1, (b"Accept", b"")),
        )))
    for _ in range(draw(weighted((8, 0), (1, 1), (1, 3)))):
        name = "".join(rng.choice(TOKEN) for _ in range(rng.randint(1, 16))).encode()
        if name.lower() in (b"host", b"content-length", b"transfer-encoding"):
            name = b"x-" + name
        value = bytes(rng.choice([9] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100)))
                      for _ in range(rng.randint(0, 30)))
        headers.append((name, value))
    hostile = draw(weighted((40, None), (1, "nul"), (1, "bare-cr"), (1, "ctl"), (1, "space-name"), (1, "no-colon"),
                             (1, "empty-name"), (1, "fold"), (1, "many"), (1, "big")))
    if hostile in HOSTILE_FIELDS:
        headers.append(HOSTILE_FIELDS[hostile])
    elif hostile == "many":
        headers += [(b"X-H%d" % i, b"v") for i in range(MAX_HEADERS + 5)]
    elif hostile == "big":
        headers.append((b"X-Big", b"a" * (MAX_HEADER_BYTES + 100)))
    if hostile in ("fold", *HOSTILE_FIELDS):
        d.head_reject.append(f"header: {hostile}")
    return hostile


HOSTILE_FIELDS: dict[str, tuple[bytes, bytes | None]] = {
    "nul": (b"X-Nul", b"a\x00b"), "bare-cr": (b"X-Cr", b"a\rb"), "ctl": (b"X-Ctl", b"a\x1bb"),
    "space-name": (b"X Name", b"v"), "no-colon": (b"NoColon", None), "empty-name": (b"", b"v"),
}


def _draw_framing(draw, d: _Draft) -> None:
    rng, body, headers = d.rng, d.body, d.headers
    d.framing = framing = draw(weighted(
        (60, "cl"), (30, "chunked"), (20, "none"), (10, "cl0"), (5, "dup-cl-same"), (6, "cl+te"), (6, "te+cl"),
        (6, "dup-cl-diff"), (3, "cl-list"), (6, "cl-bad"), (3, "cl-huge"), (6, "te-bad"), (3, "te-dup"),
        (3, "te-space-name"), (3, "te-fold"), (6, "chunk-huge"), (6, "chunk-bad"), (1, "cl-short"),
    ))
    cl_name = _case_of("content-length", rng).encode()
    if framing in ("cl", "dup-cl-same", "cl0"):
        d.payload = b"" if framing == "cl0" else body
        d.content_length = len(d.payload)
        headers += [(cl_name, b"%d" % len(d.payload))] * (2 if framing == "dup-cl-same" else 1)
    elif framing == "cl-short":
        d.payload = body[: len(body) // 2]  # promises more than it sends: the body timeout must end it
        d.content_length = len(body) + 10
        headers.append((cl_name, b"%d" % d.content_length))
        d.body_reject.append("body never completes")
    elif framing in ("chunked", "chunk-huge", "chunk-bad"):
        _draw_chunked(d)
    elif framing != "none":  # smuggling shapes: the head itself must be refused
        d.payload = body
        d.head_reject.append(framing)
        _smuggle(d, cl_name)


def _draw_chunked(d: _Draft) -> None:
    rng, body = d.rng, d.body
    cuts = [rng.randrange(len(body) + 1) for _ in range(rng.randint(0, 4))]
    d.payload = chunk_encode(body, cuts, rng, rng.random() < 0.1)
    d.headers.append((_case_of("transfer-encoding", rng).encode(), rng.choice([b"chunked", b"Chunked", b" chunked "])))
    d.chunked = True
    if d.framing == "chunk-huge":
        d.payload = rng.choice([b"FFFFFFFFFFFFFFFF", b"7fffffffffffffff", b"40001"]) + b"\r\n" + d.payload
        d.body_reject.append("huge chunk")
    elif d.framing == "chunk-bad":
        d.payload = rng.choice([b"-1\r\n", b" 5\r\nhello\r\n", b"5\r\nhelloXX", b"zz\r\n", b"11111111111111111\r\n",
                                b"5\r\nhel\x00o\r\n0\r\nbad trailer\r\n\r\n", b"5;\x00\r\nhello\r\n"]) + d.payload
        d.body_reject.append("malformed chunk")
    if d.version == b"HTTP/1.0":
        d.head_reject.append("chunked on HTTP/1.0")


def _smuggle(d: _Draft, cl_name: bytes) -> None:
    """The framing fields of a smuggling shape (``d.framing``)."""
    rng, n, headers, framing = d.rng, len(d.body), d.headers, d.framing
    te_name = _case_of("transfer-encoding", rng).encode()
    if framing in ("cl+te", "te+cl"):
        pair = [(cl_name, b"%d" % n), (te_name, b"chunked")]
        headers += pair if framing == "cl+te" else pair[::-1]
    elif framing == "dup-cl-diff":
        headers += [(cl_name, b"%d" % n), (cl_name, b"%d" % (n + 1))]
    elif framing == "cl-list":
        headers.append((cl_name, b"%d, %d" % (n, n)))
    elif framing == "cl-bad":
        headers.append((cl_name, rng.choice([b"+5", b"-1", b"0x10", b"5.0", b"1 2", b"", b"\xd9\xa3"])))
    elif framing == "cl-huge":
        headers.append((cl_name, b"9" * rng.randint(19, 40)))
    elif framing == "te-bad":
        headers.append((te_name, rng.choice([b"chunked, chunked", b"gzip, chunked", b"identity", b"chunked;q=1",
                                             b"xchunked", b"chunked\x0b", b"gzip"])))
    elif framing == "te-dup":
        headers += [(te_name, b"chunked"), (te_name, b"chunked")]
    elif framing == "te-space-name":
        headers.append((te_name + b" ", b"chunked"))
    elif framing == "te-fold":
        headers.append((te_name, b""))
        d.fold_at = len(headers) - 1


def _assemble(d: _Draft, hostile: str | None) -> Case:
    headers = d.headers
    if hostile == "fold":
        d.fold_at = d.rng.randrange(len(headers)) if headers else None
        if d.fold_at is None:
            d.head_reject.remove("header: fold")
    lines = [d.method.encode() + b" " + d.target + b" " + d.version]
    for i, (name, value) in enumerate(headers):
        lines.append(name if value is None else name + b": " + value)
        if i == d.fold_at:
            lines.append(b" chunked" if d.framing == "te-fold" else b"\tfolded")
    head = b"\r\n".join(lines)
    server_reject = []
    if len(head) > MAX_HEADER_BYTES:
        server_reject.append("header block too large")
    if len(headers) > MAX_HEADERS:
        server_reject.append("too many headers")
    follower = d.rng.random() < 0.3
    raw = head + b"\r\n\r\n" + d.payload + (FOLLOWER if follower else b"")
    return Case(raw, head, d.method, d.framing, d.head_reject, server_reject, d.body_reject, follower,
                chunked=d.chunked, content_length=d.content_length)


def _mutate(draw, case: Case, rng: random.Random) -> None:
    mutation = draw(weighted((12, None), (1, "insert"), (1, "delete"), (1, "flip")))
    if mutation is None:
        return
    data = bytearray(case.raw)
    at = rng.randrange(len(data) + 1)
    if mutation == "insert":
        data[at:at] = rng.choice([b"\x00", b"\r", b"\n", b" ", b"\t", b"\xff", b":", b"\r\n", b"\r\n "])
    elif mutation == "delete":
        del data[at:at + rng.randint(1, 8)]
    elif data:
        data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
    case.raw = bytes(data)
    case.mutated = True
