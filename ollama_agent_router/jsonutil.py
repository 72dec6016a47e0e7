"""JSON helpers shared by the server, the upstream client and the simulator."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

_encode_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Lone surrogates from client JSON fall back to \\u escapes instead of failing."""
    try:
        return _encode_compact(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(obj).encode("ascii")


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def iso_ms(ts: float | None = None) -> str:
    """UTC ISO-8601 with milliseconds and Z, like JavaScript's toISOString()."""
    if ts is None:
        ts = time.time()
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Inverse of iso_ms, also accepting offsets; raises ValueError."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def to_fixed1(x: float) -> str:
    """JavaScript's x.toFixed(1): half away from zero on the exact binary value.

    Python's format rounds half to even on that same value, so the two differ only on exact ties
    (x*10 ending in .5 exactly, like 270.25); only those take the slow exact path."""
    tenfold = x * 10
    if tenfold != int(tenfold) + 0.5 * (1 if tenfold > 0 else -1):
        return f"{x:.1f}"
    return str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def num(x: float) -> float | int:
    """Integral floats as ints, so 14.0 serialises as 14 like JavaScript."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


_WS = re.compile(r"[ \t\n\r]*")
_scan_value = json.JSONDecoder().scan_once  # the C scanner: (text, index) -> (value, end index)


class JsonObject(dict):
    """A request body object that remembers its source text and where each top-level member sits, so the
    body can be forwarded with one member changed without re-serialising the rest (the messages, which
    can be megabytes)."""

    __slots__ = ("text", "members")

    text: str
    members: list[tuple[str, int, int]]  # (key, start, end) of each top-level member, in order


_SPLICE_MIN = 8 * 1024  # below this, parsing and re-serialising a body is cheaper than tracking its members


def parse_json(text: str) -> Any:
    """``json.loads``, except that a large top-level object comes back as a JsonObject with member spans."""
    i = _WS.match(text).end()
    if len(text) < _SPLICE_MIN or not text.startswith("{", i):
        return json.loads(text)
    try:
        return _parse_members(text, i + 1)
    except (ValueError, StopIteration, IndexError):
        return json.loads(text)  # the same input again, for the standard error message


def _parse_members(text: str, i: int) -> JsonObject:
    out = JsonObject()
    members: list[tuple[str, int, int]] = []
    ws = _WS.match
    i = ws(text, i).end()
    if text[i] == "}":
        i += 1
    else:
        while True:
            start = i
            if text[i] != '"':
                raise ValueError("expected a member name")
            key, i = _scan_value(text, i)
            i = ws(text, i).end()
            if text[i] != ":":
                raise ValueError("expected ':'")
            value, i = _scan_value(text, ws(text, i + 1).end())
            out[key] = value
            members.append((key, start, i))
            i = ws(text, i).end()
            if text[i] == ",":
                i = ws(text, i + 1).end()
            elif text[i] == "}":
                i += 1
                break
            else:
                raise ValueError("expected ',' or '}'")
    if ws(text, i).end() != len(text):
        raise ValueError("extra data")
    out.text = text
    out.members = members
    return out


def splice_members(obj: JsonObject, set_first: dict[str, Any], drop: frozenset[str]) -> bytes:
    """The object's source with members named in ``drop`` removed and those in ``set_first`` set (in
    place of their first occurrence, or appended). Other members keep their exact source text."""
    text = obj.text
    parts: list[str] = []
    done: set[str] = set()
    for key, start, end in obj.members:
        if key in set_first:
            if key not in done:
                done.add(key)
                parts.append(json.dumps(key) + ":" + json.dumps(set_first[key]))
        elif key not in drop:
            parts.append(text[start:end])
    for key, value in set_first.items():
        if key not in done:
            parts.append(json.dumps(key) + ":" + json.dumps(value))
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def add_member(raw: bytes, key: str, value: Any) -> bytes | None:
    """``raw`` (a JSON object from upstream) with one more top-level member, without parsing it.

    None when ``raw`` is not an object or might already hold ``key``: the caller then parses."""
    body = raw.strip()
    if not (body.startswith(b"{") and body.endswith(b"}")) or b'"' + key.encode() + b'"' in body:
        return None
    head = body[:-1].rstrip()
    sep = b"" if head.endswith(b"{") else b","
    return head + sep + dumps(key) + b":" + dumps(value) + b"}"


_USAGE_KEYS = (b'"completion_tokens"', b'"output_tokens"', b'"eval_count"', b'"eval_duration"')
_COLON_NUMBER = re.compile(rb"\s*:\s*(\d+)")
_USAGE_TAIL = 1024  # every API puts its usage figures at the end of the reply


def usage_figures(raw: bytes) -> dict[str, int] | None:
    """The figures a tokens-per-second metric needs (OpenAI ``completion_tokens``, Anthropic and Responses
    ``output_tokens``, Ollama's ``eval_count``/``eval_duration``), read from the reply's end without parsing
    it: a few byte searches, not a JSON parse of what may be megabytes."""
    tail = raw[-_USAGE_TAIL:]
    found = {}
    for key in _USAGE_KEYS:
        i = tail.rfind(key)
        if i >= 0 and (m := _COLON_NUMBER.match(tail, i + len(key))):
            found[key[1:-1].decode()] = int(m.group(1))
    return found or None
