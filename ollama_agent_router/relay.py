"""Streaming relays: upstream SSE or NDJSON bytes go to the client as they arrive, never batched.

A relay passes chunks through untouched (tool-call deltas, usage chunks, ``[DONE]``) and only watches
for the end marker. A stream that ends without it — Ollama's way of failing mid-stream — or breaks
off is finished with an error event, so a client never mistakes a truncated reply for a complete one.
The bytes of a line that has not ended yet are held back until it does: when the upstream breaks
mid-line, that half line is dropped, so the error event stands on its own line and clients can read it.
"""

from __future__ import annotations

import json
from typing import AsyncIterator, Callable

from .errors import error_payload
from .jsonutil import dumps
from .upstream import UpstreamError, UpstreamResponse

_DONE = b"data: [DONE]"
_TAIL = 64  # bytes kept from the previous chunk, so a marker split across chunks is still seen
_MAX_HELD = 64 * 1024  # the most of an unfinished line held back


class StreamStats:
    """What a relay learned on the way: first byte time, completion, usage."""

    __slots__ = ("first_byte_at", "completed", "error", "usage", "chunks")

    def __init__(self) -> None:
        self.first_byte_at: float | None = None
        self.completed = False
        self.error: str | None = None
        self.usage: dict | None = None
        self.chunks = 0


def sse_error_event(message: str, code: str = "upstream_stream_error", status: int = 502) -> bytes:
    return b"data: " + dumps(error_payload(status, message, code)) + b"\n\n"


def ndjson_error_line(message: str) -> bytes:
    return dumps({"error": message}) + b"\n"


def _sse_usage(window: bytes) -> dict | None:
    """The usage object of the last SSE event in ``window`` that carries one, if it parses."""
    i = window.rfind(b'"usage":{')
    if i < 0:
        return None
    start = window.rfind(b"data: ", 0, i)
    end = window.find(b"\n", i)
    if start < 0 or end < 0:
        return None
    try:
        event = json.loads(window[start + 6 : end])
    except ValueError:
        return None
    usage = event.get("usage") if isinstance(event, dict) else None
    return usage if isinstance(usage, dict) else None


def _ndjson_done(window: bytes) -> bool:
    return b'"done":true' in window or b'"done": true' in window


def sse_comment(name: str, obj: object) -> bytes:
    """An SSE comment line carrying ``obj``: SSE clients (the openai SDK too) skip comments."""
    return b": " + name.encode() + b" " + dumps(obj) + b"\n\n"


async def relay(resp: UpstreamResponse, stats: StreamStats, clock: Callable[[], float], *, native: bool = False,
                on_end: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
    """Relay an OpenAI SSE stream, or an Ollama-native NDJSON stream when ``native``.

    ``on_end`` runs exactly once however the stream ends (completion, upstream failure, client disconnect).
    """
    tail = b""
    partial = b""  # the end of the last chunk after its last newline: a line still being written
    sent_end = b"\n\n"  # the last bytes passed on, to tell whether the client is between events
    try:
        try:
            async for chunk in resp.chunks():
                if stats.first_byte_at is None:
                    stats.first_byte_at = clock()
                # Events, not reads: bytes that arrived together come as one piece.
                stats.chunks += chunk.count(b"\n") if native else chunk.count(b"data: ")
                window = tail + chunk
                if native:
                    if _ndjson_done(window):
                        stats.completed = True
                    if b'"error"' in chunk:
                        stats.error = "upstream reported an error"
                else:
                    if b'"usage"' in chunk:
                        stats.usage = _sse_usage(window) or stats.usage
                    if _DONE in window:
                        stats.completed = True
                tail = window[-_TAIL:]
                if partial:
                    chunk = partial + chunk
                cut = chunk.rfind(b"\n") + 1
                if len(chunk) - cut > _MAX_HELD:
                    cut = len(chunk)  # a line this long is passed on as it comes
                partial = chunk[cut:]
                if cut:
                    out = chunk[:cut] if partial else chunk
                    sent_end = (sent_end + out)[-2:]
                    yield out
        except UpstreamError as e:
            stats.error = e.message
            message = f"Upstream stream failed: {e.message}"
            if native:
                event = ndjson_error_line(message)
            elif e.kind == "timeout":
                event = sse_error_event(message, "upstream_timeout", 504)
            else:
                event = sse_error_event(message)
            yield _separator(sent_end, native) + event
            return
        if partial:
            sent_end = (sent_end + partial)[-2:]
            yield partial
        if not stats.completed and stats.error is None:
            stats.error = "stream ended before completion"
            if native:
                event = ndjson_error_line("The model stream ended before completion")
            else:
                event = sse_error_event("The model stream ended before completion (no [DONE]): Ollama reported an error")
            yield _separator(sent_end, native) + event
    finally:
        resp.close()
        if on_end is not None:
            on_end()


def _separator(sent_end: bytes, native: bool) -> bytes:
    """What ends the line (NDJSON) or event (SSE) the client is in, so an error event that follows is whole."""
    if native:
        return b"" if sent_end.endswith(b"\n") else b"\n"
    return b"" if sent_end.endswith(b"\n\n") else b"\n" if sent_end.endswith(b"\n") else b"\n\n"
