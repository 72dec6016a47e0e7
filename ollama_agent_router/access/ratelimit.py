"""Rate limiting with GCRA (the generic cell rate algorithm): one number per bucket, O(1) per request.

A limit of ``requests`` per ``windowSeconds`` lets a client spend ``requests`` at once and then refills
at ``requests / windowSeconds``. There is no window edge at which a second full burst becomes
available, unlike the original's fixed window. Rejected requests cost nothing.

Each bucket stores its theoretical arrival time (TAT). Times are integer nanoseconds multiplied by the
limit's ``requests``, so the emission interval ``window / requests`` is an exact integer and a burst of
exactly ``requests`` fits, with no float rounding. The event loop runs one check at a time, so
check-and-update is atomic without locks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from ..config.schema import TrafficLimit

_NS = 1_000_000_000
_MIN_PRUNE = 1024


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until the next request would be allowed (0 when allowed)

    def headers(self, now_epoch: float) -> list[tuple[str, str]]:
        """The original's headers: ``X-RateLimit-Reset`` is absolute Unix seconds."""
        out = [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(now_epoch + self.reset_after))),
        ]
        if not self.allowed:
            out.append(("Retry-After", str(max(1, math.ceil(self.retry_after)))))
        return out


class RateLimiter:
    """GCRA buckets keyed by anything hashable; a bucket keeps the limit it was made for."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        # key -> (scaled TAT, requests, window ns). A bucket whose TAT has passed is full: it is dropped.
        self.buckets: dict[Hashable, tuple[int, int, int]] = {}
        self._prune_at = _MIN_PRUNE

    def check(self, key: Hashable, limit: TrafficLimit) -> Decision:
        """Count one request against ``key``'s bucket if the limit allows it."""
        now = self.clock()
        n, window = limit.requests, limit.window_seconds * _NS
        scaled_now = now * n
        stored = self.buckets.get(key)
        # A bucket made for another limit (the admin changed it) starts afresh under the new one.
        tat = stored[0] if stored is not None and stored[1] == n and stored[2] == window else scaled_now
        tat = max(tat, scaled_now)
        new_tat = tat + window  # one request costs window/n, scaled by n
        if new_tat - scaled_now > window * n:
            # Allowed again once the TAT has drained to within the burst allowance.
            retry = (new_tat - scaled_now - window * n) / n / _NS
            return Decision(False, n, 0, (tat - scaled_now) / n / _NS, retry)
        self.buckets[key] = (new_tat, n, window)
        if len(self.buckets) >= self._prune_at:
            self.prune(now)
        remaining = (scaled_now + window * n - new_tat) // window
        return Decision(True, n, remaining, (new_tat - scaled_now) / n / _NS, 0.0)

    def blocked(self, key: Hashable, limit: TrafficLimit) -> Decision | None:
        """The rejection ``check`` would give, without counting anything; None when a request would pass."""
        stored = self.buckets.get(key)
        if stored is None:
            return None
        now = self.clock()
        n, window = limit.requests, limit.window_seconds * _NS
        scaled_now = now * n
        if stored[1] != n or stored[2] != window or stored[0] + window - scaled_now <= window * n:
            return None
        return Decision(False, n, 0, (stored[0] - scaled_now) / n / _NS,
                        (stored[0] + window - scaled_now - window * n) / n / _NS)

    def reset(self, match: Callable[[Hashable], bool]) -> int:
        """Forget the buckets whose key matches; returns how many."""
        doomed = [k for k in self.buckets if match(k)]
        for k in doomed:
            del self.buckets[k]
        return len(doomed)

    def prune(self, now: int | None = None) -> None:
        """Drop full buckets (TAT in the past): they hold nothing a fresh bucket would not."""
        now = self.clock() if now is None else now
        self.buckets = {k: b for k, b in self.buckets.items() if b[0] > now * b[1]}
        # Amortised O(1): the next sweep waits until the live set has doubled.
        self._prune_at = max(_MIN_PRUNE, 2 * len(self.buckets))
