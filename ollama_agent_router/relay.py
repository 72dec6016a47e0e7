"""Streaming relays: upstream SSE or NDJSON bytes go to the client as they arrive, never batched.

A relay passes chunks through untouched (tool-call deltas, usage chunks, end markers) and only watches
for the format's end marker. A stream that ends without it — Ollama's way of failing mid-stream — or
breaks off is finished with an error event in the same format, so a client never mistakes a truncated
reply for a complete one. The bytes of a line that has not ended yet are held back until it does: when
the upstream breaks mid-line, that half line is dropped, so the error event stands on its own line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from .errors import anthropic_payload, error_payload
from .jsonutil import dumps
from .upstream import UpstreamError, UpstreamResponse

_TAIL = 64  # bytes kept from the previous chunk, so a marker split across chunks is still seen
_MAX_HELD = 64 * 1024  # the most of an unfinished line held back


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """What a relay needs to know of one streaming wire format."""

    content_type: str
    event_mark: bytes  # one occurrence per event (counted for the chunks metric)
    end_marks: tuple[bytes, ...]  # any of these seen means the stream completed
    error_event: Callable[[str, str, int], bytes]  # (message, code, status) -> one whole error event
    separator: bytes  # what ends one event
    error_mark: bytes | None = None  # seen in a chunk: upstream reported an error inside the stream
    usage_key: bytes = b'"usage":{'  # where a usage object starts, looked for in the last event
    usage_in: str | None = None  # the event member that holds the usage object (None: the event itself)


def sse_error_event(message: str, code: str = "upstream_stream_error", status: int = 502) -> bytes:
    return b"data: " + dumps(error_payload(status, message, code)) + b"\n\n"


def ndjson_error_line(message: str, code: str = "", status: int = 0) -> bytes:
    return dumps({"error": message}) + b"\n"


def anthropic_error_event(message: str, code: str = "upstream_stream_error", status: int = 502) -> bytes:
    """Anthropic's ``error`` event: both Anthropic SDKs raise it as an API error (Ollama never sends one; it
    just ends the stream, which a client could take for a short answer)."""
    return b"event: error\ndata: " + dumps(anthropic_payload(status, message, code)) + b"\n\n"


def responses_error_event(message: str, code: str = "upstream_stream_error", status: int = 502) -> bytes:
    """An ``error`` event carrying the OpenAI envelope: the openai SDK raises any event with a top-level
    ``error``; Codex skips it, sees no ``response.completed`` and retries, as it does when Ollama cuts off."""
    return b"event: error\ndata: " + dumps({"type": "error", **error_payload(status, message, code)}) + b"\n\n"


OPENAI_SSE = StreamFormat("text/event-stream", b"data: ", (b"data: [DONE]",), sse_error_event, b"\n\n")
OLLAMA_NDJSON = StreamFormat("application/x-ndjson", b"\n", (b'"done":true', b'"done": true'), ndjson_error_line,
                             b"\n", error_mark=b'"error"')
# Named events (§7.6); the usage that counts is message_delta's, the last one in the stream. No error mark:
# Ollama sends no error event, and a stream that has one ends without message_stop, which counts as failed
# anyway (looking for it costs a scan of every event).
ANTHROPIC_SSE = StreamFormat("text/event-stream", b"event: ", (b"event: message_stop",), anthropic_error_event,
                             b"\n\n")
# Named events (§8.5); ``response.failed`` ends a stream as well, with the failure inside it. The usage is
# in the final response object.
RESPONSES_SSE = StreamFormat("text/event-stream", b"event: ",
                             (b"event: response.completed", b"event: response.failed", b"event: response.incomplete"),
                             responses_error_event, b"\n\n", error_mark=b"event: response.failed",
                             usage_in="response")


class StreamStats:
    """What a relay learned on the way: first byte time, completion, usage."""

    __slots__ = ("first_byte_at", "completed", "error", "usage", "chunks")

    def __init__(self) -> None:
        self.first_byte_at: float | None = None
        self.completed = False
        self.error: str | None = None
        self.usage: dict | None = None
        self.chunks = 0


def sse_comment(name: str, obj: object) -> bytes:
    """An SSE comment line carrying ``obj``: SSE clients (the openai SDK too) skip comments."""
    return b": " + name.encode() + b" " + dumps(obj) + b"\n\n"


def last_usage(window: bytes, key: bytes, inside: str | None = None) -> dict | None:
    """The usage object of the last line in ``window`` that carries one (in its ``inside`` member, when
    given), if it parses."""
    i = window.rfind(key)
    if i < 0:
        return None
    start = window.rfind(b"\n", 0, i) + 1
    end = window.find(b"\n", i)
    if end < 0:
        return None
    line = window[start:end]
    if line.startswith(b"data: "):
        line = line[6:]
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if inside is not None and isinstance(event, dict):
        event = event.get(inside)
    usage = event.get("usage") if isinstance(event, dict) else None
    return usage if isinstance(usage, dict) else None


class _Watch:
    """Reads each chunk once for the format's markers: completion, errors, usage, event count."""

    def __init__(self, fmt: StreamFormat, stats: StreamStats) -> None:
        self.fmt = fmt
        self.stats = stats
        self.tail = b""

    def see(self, chunk: bytes) -> None:
        fmt, stats = self.fmt, self.stats
        stats.chunks += chunk.count(fmt.event_mark)
        window = self.tail + chunk
        for mark in fmt.end_marks:
            if mark in window:
                stats.completed = True
                break
        if fmt.error_mark is not None and fmt.error_mark in chunk:
            stats.error = "upstream reported an error"
        if b'"usage"' in chunk:
            stats.usage = last_usage(window, fmt.usage_key, fmt.usage_in) or stats.usage
        self.tail = window[-_TAIL:]


async def relay(resp: UpstreamResponse, fmt: StreamFormat, stats: StreamStats, clock: Callable[[], float], *,
                on_end: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
    """Relay an upstream stream in ``fmt``. ``on_end`` runs exactly once however the stream ends
    (completion, upstream failure, client disconnect)."""
    watch = _Watch(fmt, stats)
    partial = b""  # the end of the last chunk after its last newline: a line still being written
    sent_end = b"\n\n"  # the last bytes passed on, to tell whether the client is between events
    try:
        try:
            async for chunk in resp.chunks():
                if stats.first_byte_at is None:
                    stats.first_byte_at = clock()
                watch.see(chunk)  # events, not reads: bytes that arrived together come as one piece
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
            code, status = ("upstream_timeout", 504) if e.kind == "timeout" else ("upstream_stream_error", 502)
            yield _separator(sent_end, fmt) + fmt.error_event(f"Upstream stream failed: {e.message}", code, status)
            return
        if partial:
            sent_end = (sent_end + partial)[-2:]
            yield partial
        if not stats.completed and stats.error is None:
            stats.error = "stream ended before completion"
            message = "The model stream ended before completion: Ollama reported an error"
            yield _separator(sent_end, fmt) + fmt.error_event(message, "upstream_stream_error", 502)
    finally:
        resp.close()
        if on_end is not None:
            on_end()


def _separator(sent_end: bytes, fmt: StreamFormat) -> bytes:
    """What ends the line (NDJSON) or event (SSE) the client is in, so an error event that follows is whole."""
    if fmt.separator == b"\n":
        return b"" if sent_end.endswith(b"\n") else b"\n"
    return b"" if sent_end.endswith(b"\n\n") else b"\n" if sent_end.endswith(b"\n") else b"\n\n"
