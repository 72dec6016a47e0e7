"""What the simulated GPU spent its time on, as the simulator's own accounting (for benchmarks and tests).

Every moment is one of: generating (some request holds a runner slot: prompt or tokens), loading (a model
is being loaded and nothing generates), or idle. Loads are counted with their seconds. With ``record``
set, each change of a model's residency is also kept as ``(time, model, state)`` so that a benchmark can
draw residency over time; without it nothing grows, so a simulator serving for days stays bounded.
"""

from __future__ import annotations

import time
from typing import Callable

# A model's states in the timeline: loading, then loaded (resident, idle) or busy (generating), then gone.
LOADING, LOADED, BUSY, GONE = "loading", "loaded", "busy", "gone"


class Activity:
    def __init__(self, *, record: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = {"generating": 0.0, "loading": 0.0, "idle": 0.0}
        self.loads = 0
        self.load_seconds = 0.0
        self.timeline: list[tuple[float, str, str]] | None = [] if record else None
        self._busy: dict[str, int] = {}
        self._generating = 0
        self._loading = 0
        self._since = clock()

    def _settle(self) -> float:
        """Book the time since the last change to the state the GPU was in; returns now."""
        now = self.clock()
        state = "generating" if self._generating else ("loading" if self._loading else "idle")
        self.seconds[state] += now - self._since
        self._since = now
        return now

    def _note(self, now: float, model: str, state: str) -> None:
        if self.timeline is not None:
            self.timeline.append((now, model, state))

    def totals(self) -> dict[str, float]:
        """Seconds generating, loading and idle so far, the load count and the seconds spent loading."""
        self._settle()
        return {**self.seconds, "loads": self.loads, "load_seconds": self.load_seconds}

    # ---- events from the scheduler ---------------------------------------------------------------------
    def load_started(self, model: str) -> None:
        now = self._settle()
        self._loading += 1
        self.loads += 1
        self._note(now, model, LOADING)

    def load_ended(self, model: str, seconds: float) -> None:
        now = self._settle()
        self._loading -= 1
        self.load_seconds += seconds
        self._note(now, model, LOADED)

    def slots_busy(self, model: str, busy: int) -> None:
        """``model`` now has ``busy`` slots generating."""
        before = self._busy.get(model, 0)
        if busy == before:
            return
        now = self._settle()
        self._busy[model] = busy
        self._generating += busy - before
        if (before == 0) != (busy == 0):
            self._note(now, model, BUSY if busy else LOADED)

    def unloaded(self, model: str) -> None:
        self._note(self.clock(), model, GONE)
