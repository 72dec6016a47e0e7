"""A zero-delay Ollama stand-in for benchmarks (``ollama-agent-router simulate --fast``).

It answers the routes a router's hot path uses — ``POST /v1/chat/completions`` (JSON, or SSE in the
current Ollama flavour with a usage chunk and ``[DONE]``), ``POST /v1/messages`` (JSON, or Anthropic's
named events as Ollama sends them, §7.6), ``/api/ps``, ``/api/tags``, ``/api/version`` and ``/`` — with
wire-correct replies and no scheduling, loading, faults or bookkeeping, so that the
upstream is never the bottleneck when a router's overhead is measured. Everything else gets Ollama's
plain-text 404. Use the full ``OllamaSimulator`` for behaviour; use this one for speed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable

from ..http.parser import ProtocolError, find_head_end, parse_head
from ..jsonutil import dumps
from ..log import Logger

_TEXT_404 = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\n404 page not found"


def _reply(status: str, content_type: bytes, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: ".encode() + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _sse(events: list[bytes]) -> bytes:
    """A whole chunked SSE reply, one event per chunk as Ollama flushes them."""
    parts = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
    parts += [b"%x\r\n%b\r\n" % (len(event), event) for event in events]
    return b"".join(parts) + b"0\r\n\r\n"


def _openai_error(status: str, message: str) -> bytes:
    body = {"error": {"message": message, "type": "not_found_error" if status.startswith("404") else
                      "invalid_request_error", "param": None, "code": None}}
    return _reply(status, b"application/json", dumps(body))


def _anthropic_error(status: str, message: str) -> bytes:
    kind = "not_found_error" if status.startswith("404") else "invalid_request_error"
    return _reply(status, b"application/json", dumps({"type": "error", "error": {"type": kind, "message": message}}))


def _named(event: dict) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"


class FastSimulator:
    def __init__(self, models: list[str], *, reply_tokens: int = 8) -> None:
        self.models = models
        self.reply_tokens = max(1, reply_tokens)
        self._server: asyncio.base_events.Server | None = None
        self.url = ""
        # A stream is the same bytes for every request in the same second: render it once, so the
        # upstream stays zero-delay for a 200-chunk reply too.
        self._last_stream: tuple[tuple[str, str, int, bool], bytes] | None = None
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

    def _request(self, body: bytes, error: Callable[[str, str], bytes]) -> dict | bytes:
        """The request object, or the error reply (``error`` writes it in the API's shape)."""
        try:
            req = json.loads(body)
            model = str(req.get("model", ""))
        except (ValueError, AttributeError):
            return error("400 Bad Request", "invalid JSON")
        if model not in self.models:
            return error("404 Not Found", f"model '{model}' not found")
        return req

    def chat(self, body: bytes) -> bytes:
        req = self._request(body, _openai_error)
        if isinstance(req, bytes):
            return req
        model, created = req["model"], int(time.time())
        usage = {"prompt_tokens": 8, "completion_tokens": self.reply_tokens, "total_tokens": 8 + self.reply_tokens}
        if req.get("stream") is True:
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            return self._stream(("chat", model, created, include_usage),
                                lambda: self._render_stream(model, created, usage, include_usage))
        out = {"id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": model,
               "system_fingerprint": "fp_ollama",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * self.reply_tokens},
                            "finish_reason": "stop"}], "usage": usage}
        return _reply("200 OK", b"application/json", dumps(out) + b"\n")

    def messages(self, body: bytes) -> bytes:
        req = self._request(body, _anthropic_error)
        if isinstance(req, bytes):
            return req
        model = req["model"]
        usage = {"input_tokens": 8, "output_tokens": self.reply_tokens}
        if req.get("stream") is True:
            return self._stream(("messages", model, int(time.time()), False),
                                lambda: self._render_messages(model, usage))
        out = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": "tok " * self.reply_tokens}], "stop_reason": "end_turn",
               "usage": usage}
        return _reply("200 OK", b"application/json", dumps(out) + b"\n")

    def _stream(self, key: tuple[str, str, int, bool], render: Callable[[], bytes]) -> bytes:
        if self._last_stream is None or self._last_stream[0] != key:
            self._last_stream = (key, render())
        return self._last_stream[1]

    def _render_messages(self, model: str, usage: dict) -> bytes:
        start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                      "model": model, "content": [],
                                                      "usage": {"input_tokens": 8, "output_tokens": 0}}}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok "}}
        events = [start, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
        events += [delta] * self.reply_tokens
        events += [{"type": "content_block_stop", "index": 0},
                   {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
                   {"type": "message_stop"}]
        return _sse([_named(e) for e in events])

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
        return _sse([b"data: " + dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"])


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
            elif head.method == "POST" and path == b"/v1/messages":
                self.transport.write(self.sim.messages(body))
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
