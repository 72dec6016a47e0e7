"""A zero-delay Ollama stand-in for benchmarks (``ollama-agent-router simulate --fast``).

It answers the routes a router's hot path uses — ``POST /v1/chat/completions`` (JSON, or SSE in the
current Ollama flavour with a usage chunk and ``[DONE]``), ``/api/ps``, ``/api/tags``, ``/api/version``
and ``/`` — with wire-correct replies and no scheduling, loading, faults or bookkeeping, so that the
upstream is never the bottleneck when a router's overhead is measured. Everything else gets Ollama's
plain-text 404. Use the full ``OllamaSimulator`` for behaviour; use this one for speed.
"""

from __future__ import annotations

import asyncio
import json
import time

from ..http.parser import ProtocolError, find_head_end, parse_head
from ..jsonutil import dumps
from ..log import Logger

_TEXT_404 = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\n404 page not found"


def _reply(status: str, content_type: bytes, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: ".encode() + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class FastSimulator:
    def __init__(self, models: list[str], *, reply_tokens: int = 8) -> None:
        self.models = models
        self.reply_tokens = max(1, reply_tokens)
        self._server: asyncio.base_events.Server | None = None
        self.url = ""
        # A stream is the same bytes for every request in the same second: render it once, so the
        # upstream stays zero-delay for a 200-chunk reply too.
        self._last_stream: tuple[tuple[str, int, bool], bytes] | None = None
        tags = {"models": [{"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 4_000_000_000,
                            "digest": "0" * 64, "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                                           "families": ["llama"], "parameter_size": "7B",
                                                           "quantization_level": "Q4_K_M"}} for m in models]}
        self._static = {
            b"/api/ps": _reply("200 OK", b"application/json; charset=utf-8", b'{"models":[]}'),
            b"/api/tags": _reply("200 OK", b"application/json; charset=utf-8", dumps(tags)),
            b"/api/version": _reply("200 OK", b"application/json; charset=utf-8", b'{"version":"0.33.0"}'),
            b"/": _reply("200 OK", b"text/plain; charset=utf-8", b"Ollama is running"),
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _FastConnection(self), host, port, backlog=1024)
        bound = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def chat(self, body: bytes) -> bytes:
        try:
            req = json.loads(body)
            model = str(req.get("model", ""))
        except (ValueError, AttributeError):
            return _reply("400 Bad Request", b"application/json", b'{"error":{"message":"invalid JSON",'
                          b'"type":"invalid_request_error","param":null,"code":null}}')
        if model not in self.models:
            msg = dumps({"error": {"message": f"model '{model}' not found", "type": "not_found_error",
                                   "param": None, "code": None}})
            return _reply("404 Not Found", b"application/json", msg)
        created = int(time.time())
        usage = {"prompt_tokens": 8, "completion_tokens": self.reply_tokens, "total_tokens": 8 + self.reply_tokens}
        if req.get("stream") is True:
            return self._stream(model, created, usage, bool((req.get("stream_options") or {}).get("include_usage")))
        out = {"id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": model,
               "system_fingerprint": "fp_ollama",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * self.reply_tokens},
                            "finish_reason": "stop"}], "usage": usage}
        return _reply("200 OK", b"application/json", dumps(out) + b"\n")

    def _stream(self, model: str, created: int, usage: dict, include_usage: bool) -> bytes:
        key = (model, created, include_usage)
        if self._last_stream is None or self._last_stream[0] != key:
            self._last_stream = (key, self._render_stream(model, created, usage, include_usage))
        return self._last_stream[1]

    def _render_stream(self, model: str, created: int, usage: dict, include_usage: bool) -> bytes:
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_ollama"}
        events = []
        for i in range(self.reply_tokens):
            delta = {"role": "assistant", "content": "tok "} if i == 0 else {"content": "tok "}
            events.append(dict(head, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
        events.append(dict(head, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if include_usage:
            events.append(dict(head, choices=[], usage=usage))
        parts = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
        for event in events:
            data = b"data: " + dumps(event) + b"\n\n"
            parts.append(b"%x\r\n%b\r\n" % (len(data), data))
        done = b"data: [DONE]\n\n"
        parts.append(b"%x\r\n%b\r\n0\r\n\r\n" % (len(done), done))
        return b"".join(parts)


class _FastConnection(asyncio.Protocol):
    def __init__(self, sim: FastSimulator) -> None:
        self.sim = sim
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = find_head_end(self.buf)
            if end < 0:
                return
            try:
                head = parse_head(self.buf[: end - 4])
            except ProtocolError:
                assert self.transport is not None
                self.transport.close()
                return
            length = head.content_length or 0
            if len(self.buf) < end + length:
                return
            body = self.buf[end : end + length]
            self.buf = self.buf[end + length :]
            assert self.transport is not None
            path = head.path.encode()
            if head.method == "POST" and path == b"/v1/chat/completions":
                self.transport.write(self.sim.chat(body))
            else:
                self.transport.write(self.sim._static.get(path, _TEXT_404) if head.method == "GET" else _TEXT_404)


async def run_fast_simulator(model_names: list[str], host: str, port: int, log: Logger) -> None:
    """Serve until cancelled (``ollama-agent-router simulate --fast``)."""
    sim = FastSimulator(model_names)
    await sim.start(host, port)
    log.info("simulator_listening", url=sim.url, models=model_names, fast=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
