"""Pure pieces of the Ollama simulator that every API shares: names, durations, timestamps, errors, vectors.

Nothing here does I/O or waits, so every piece can be checked with plain data. The facts follow
shared/spec/wire-formats.md (§1 native API conventions and errors).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
import time
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

FOREVER_S = 292 * 365.25 * 86400  # Go's maximum time.Duration, roughly: how Ollama renders "keep forever"
OPENAI_JSON = "application/json"  # the OpenAI layer writes no charset
EMBEDDING_DIMS = 384
BUSY = "server busy, please try again.  maximum pending requests exceeded"  # two spaces, as Ollama writes it
MIDSTREAM_ERROR = "an error was encountered while running the model"

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d*\.?\d*)([^\d.]*)")


class SimError(Exception):
    """An error Ollama would answer with before any response byte, rendered in the shape of the API it came in on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- names ------------------------------------------------------------------------------------

def canonical_name(name: str) -> str:
    """Ollama's short name: library prefixes hidden, ``:latest`` added when no tag is given."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def full_name(canonical: str) -> str:
    """The fully qualified name Ollama puts in capability errors."""
    parts = canonical.split("/")
    if len(parts) == 1:
        return "registry.ollama.ai/library/" + canonical
    if len(parts) == 2:
        return "registry.ollama.ai/" + canonical
    return canonical


def owner(canonical: str) -> str:
    parts = canonical.split("/")
    return "library" if len(parts) == 1 else parts[-2]


def digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parameter_count(parameter_size: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMBT]?)\s*", parameter_size.upper())
    if not m:
        return 0
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


# ---- keep_alive --------------------------------------------------------------------------------

def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration in seconds; raises SimError(400) with Go's message on bad input."""
    s = text
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise SimError(400, f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise SimError(400, f'time: invalid duration "{text}"')
        if not unit:
            raise SimError(400, f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise SimError(400, f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep a model after it goes idle; None means forever (any negative value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SimError(400, "json: cannot unmarshal keep_alive: expected a number or a duration string")
    seconds = float(value) if not isinstance(value, str) else parse_go_duration(value)
    return None if seconds < 0 else seconds


# ---- timestamps ---------------------------------------------------------------------------------

def rfc3339(ns: int, local: bool) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed; UTC ``Z`` or the local offset (``Z`` at offset 0, as Go)."""
    secs, frac_ns = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, tz=timezone.utc)
    if local:
        dt = dt.astimezone()
    frac = f"{frac_ns:09d}".rstrip("0")
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + ("." + frac if frac else "")
    offset = dt.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def now_utc() -> str:
    return rfc3339(time.time_ns(), local=False)


def monotonic_to_local(expires_mono: float, now_mono: float, now_wall: float) -> str:
    remaining = FOREVER_S if math.isinf(expires_mono) else expires_mono - now_mono
    return rfc3339(int((now_wall + remaining) * 1e9), local=True)


# ---- embeddings -----------------------------------------------------------------------------------

def embedding(model: str, text: str, dims: int, normalise: bool = True) -> list[float]:
    """A stable pseudo-random vector per (model, text): equal texts embed equally."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vec = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    return unit(vec) if normalise else vec


def unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def base64_floats(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")


# ---- errors -------------------------------------------------------------------------------------

def status_message(status: int, sent: str | None) -> str:
    """Ollama's own text for an injected status."""
    if status == 503:
        return BUSY
    if status == 404 and sent:
        return f"model '{sent}' not found"
    if status == 500:
        return "llama runner process has terminated: exit status 2"
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def json_kind(value: Any) -> str:
    """How Go's JSON decoder names a value's kind in its type errors."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(type(value), "number")


# ---- named SSE events (Anthropic Messages, OpenAI Responses) --------------------------------------

def named_event(name: str, data: bytes) -> bytes:
    """One ``event:`` + ``data:`` SSE event, as Ollama writes them: no id, no retry, no comments."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
