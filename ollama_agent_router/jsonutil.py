"""JSON helpers shared by the server, the upstream client and the simulator."""

from __future__ import annotations

import json
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
    """JavaScript's x.toFixed(1): half away from zero on the exact binary value."""
    return str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def num(x: float) -> float | int:
    """Integral floats as ints, so 14.0 serialises as 14 like JavaScript."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x
