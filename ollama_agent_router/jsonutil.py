"""JSON helpers shared by the server, the upstream client and the simulator."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from json.decoder import scanstring
from typing import Any, Callable, Generator

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


class JsonLimit(ValueError):
    """Well-formed as far as it was read, but over a bound: too many values or too deeply nested."""


def parse_json_steps(text: str, max_values: int, max_depth: int, step: int = 512) -> Generator[None, None, Any]:
    """Parse ``text`` counting values and nesting: ``JsonLimit`` past either bound, ``JSONDecodeError`` when
    malformed. One pass, no recursion: the C scanner reads scalars and strings, containers are opened and
    closed here. Yields every ``step`` values, so its caller can let other work run meanwhile; returns the
    document, a large top-level object as a JsonObject with the spans of its members."""
    ws = _WS.match
    stack: list[Any] = []  # the open containers, outermost first
    names: list[tuple[str, int]] = []  # for each open object: the member being read, and where it starts
    members: list[tuple[str, int, int]] = []  # spans of the top-level object's members
    count = 0
    i = ws(text).end()
    while True:
        # A value starts at i.
        opener = text[i : i + 1]
        if opener == "[" or opener == "{":
            if len(stack) >= max_depth:
                raise JsonLimit(f"nested deeper than {max_depth} levels")
            i = ws(text, i + 1).end()
            value: Any = [] if opener == "[" else {}
            if not text.startswith("]" if opener == "[" else "}", i):
                stack.append(value)
                if opener == "{":
                    i = _member_name(text, i, ws, names)
                continue
            i += 1
        else:
            try:
                value, i = _scan_value(text, i)
            except StopIteration as e:
                raise json.JSONDecodeError("Expecting value", text, e.value) from None
        # A value ended at i: put it into its container, and close every container that ends right after it.
        while True:
            count += 1
            if count > max_values:
                raise JsonLimit(f"holds more than {max_values} values")
            if count % step == 0:
                yield
            if not stack:
                return _document(value, text, ws(text, i).end(), members)
            top = stack[-1]
            if type(top) is list:
                top.append(value)
            else:
                name, start = names.pop()
                top[name] = value
                if len(stack) == 1:
                    members.append((name, start, i))
            i = ws(text, i).end()
            sep = text[i : i + 1]
            if sep == ",":
                i = ws(text, i + 1).end()
                if type(top) is dict:
                    i = _member_name(text, i, ws, names)
                break
            if sep != ("]" if type(top) is list else "}"):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i += 1
            value = stack.pop()


def _member_name(text: str, i: int, ws: Callable, names: list[tuple[str, int]]) -> int:
    """Read a member's name and colon at ``i`` onto ``names`` (with ``i``); returns where its value starts."""
    if not text.startswith('"', i):
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    name, end = scanstring(text, i + 1)
    end = ws(text, end).end()
    if not text.startswith(":", end):
        raise json.JSONDecodeError("Expecting ':' delimiter", text, end)
    names.append((name, i))
    return ws(text, end + 1).end()


def _document(value: Any, text: str, end: int, members: list[tuple[str, int, int]]) -> Any:
    """The top-level value that ended at ``end``, once nothing but whitespace is left after it."""
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    if type(value) is not dict or len(text) < _SPLICE_MIN:
        return value
    out = JsonObject(value)
    out.text = text
    out.members = members
    return out


async def parse_json_sliced(text: str, max_values: int, max_depth: int, slice_s: float = 0.005) -> Any:
    """``parse_json_steps`` run to its end, giving the event loop back every ``slice_s`` seconds: a large
    body costs other connections a few milliseconds at a time, never the whole parse at once."""
    # A small text with few brackets and commas cannot pass either bound: the C parser takes it whole.
    if len(text) < _SPLICE_MIN and text.count("[") + text.count("{") + text.count(",") < min(max_values, max_depth):
        return json.loads(text)
    steps = parse_json_steps(text, max_values, max_depth)
    mark = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            if time.perf_counter() - mark > slice_s:
                await asyncio.sleep(0)  # what the caller does with a large document gets a slice of its own
            return done.value
        if time.perf_counter() - mark > slice_s:
            await asyncio.sleep(0)
            mark = time.perf_counter()


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


_USAGE_FIGURE = re.compile(rb'"(completion_tokens|output_tokens|eval_count|eval_duration)"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_USAGE_TAIL = 1024  # every API puts its usage figures at the end of the reply


def usage_figures(raw: bytes) -> dict[str, int] | None:
    """The figures a tokens-per-second metric needs (OpenAI ``completion_tokens``, Anthropic and Responses
    ``output_tokens``, Ollama's ``eval_count``/``eval_duration``), read from the reply's end without parsing
    it. OpenAI's, the common case, is one byte search and one match."""
    tail = max(0, len(raw) - _USAGE_TAIL)
    i = raw.rfind(b'"completion_tokens"', tail)
    if i >= 0 and (m := _COMPLETION_TOKENS.match(raw, i)):
        return {"completion_tokens": int(m[1])}
    found = {m[1].decode(): int(m[2]) for m in _USAGE_FIGURE.finditer(raw, tail)}
    return found or None
