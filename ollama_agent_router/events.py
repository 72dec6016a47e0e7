"""The live feed's hub: producers publish typed events, and every subscriber reads them from its own bounded queue.

Producers (the runner, the job manager, the runtime snapshot) test ``hub.subscribers`` before they build an
event, so with nobody watching an event costs one attribute test. An event is encoded to its SSE frame once,
however many read it. Each subscriber's queue holds at most ``limit`` frames: a reader that falls behind has
new frames dropped and counted, never buffered without bound (``api/events.py`` then tells it how many and
sends it a fresh snapshot).

Nothing here holds a prompt, a completion or a key: events are built from routing facts, job states and the
GPU and model snapshot only. The last ``keep`` decisions are kept, with what ``/v1/router/route`` would have
shown for them (their ``DecisionRecord``), so a dashboard that connects late or clicks one can see them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar, NamedTuple, Protocol

from .jsonutil import dumps

QUEUE_LIMIT = 256  # frames per subscriber (a few hundred bytes each)
KEEP_DECISIONS = 200
MAX_SUBSCRIBERS = 32


class Event(Protocol):
    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]: ...


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


# Events are tuples rather than frozen dataclasses: one is built per request while someone watches, and a
# frozen dataclass pays a setattr per field.
class DecisionEvent(NamedTuple):
    """One answered request: which door, which model and why, how long it waited and ran, and its status."""

    api: str  # the door: openai | ollama | kong | anthropic | responses ...
    plane: str
    task: str | None
    model: str | None
    mode: str  # sync | stream | async | reject
    status: int
    queue_ms: int
    duration_ms: float
    reason: str
    at: float  # wall clock, seconds
    record: Any = None  # the runner's DecisionRecord, kept for the explanation; never sent
    kind = "decision"

    def to_json(self) -> dict[str, Any]:
        return {"at": _ms(self.at), "api": self.api, "plane": self.plane, "task": self.task, "model": self.model,
                "mode": self.mode, "status": self.status, "queueMs": self.queue_ms,
                "durationMs": round(self.duration_ms, 1), "reason": self.reason,
                "explained": self.record is not None}


class JobEvent(NamedTuple):
    """A job changed state (it was accepted, started, retried, finished, cancelled or expired)."""

    id: str
    status: str
    model: str
    task: str
    priority: str
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    kind = "job"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "model": self.model, "task": self.task,
                "priority": self.priority, "attempts": self.attempts, "createdAt": _ms(self.created_at),
                "startedAt": _ms(self.started_at), "finishedAt": _ms(self.finished_at)}


class RuntimeEvent(NamedTuple):
    """The background snapshot changed: GPU memory, loaded models, Ollama's reachability."""

    body: dict[str, Any]
    kind = "runtime"

    def to_json(self) -> dict[str, Any]:
        return self.body


def sse_frame(kind: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    return head + b"event: " + kind.encode("ascii") + b"\ndata: " + dumps(data) + b"\n\n"


class Subscriber:
    """One reader's queue of encoded frames; full means new frames are dropped and counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.dropped = 0
        self.closed = False
        self._waiter: asyncio.Future | None = None

    def put(self, frame: bytes) -> None:
        if len(self.frames) >= self.limit:
            self.dropped += 1
            return
        self.frames.append(frame)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[bytes]:
        frames = list(self.frames)
        self.frames.clear()
        return frames

    async def wait(self, timeout: float) -> None:
        """Until there is a frame, the hub closes, or ``timeout`` seconds pass."""
        if self.frames or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(max(0.0, timeout), self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


class EventHub:
    def __init__(self, limit: int = QUEUE_LIMIT, keep: int = KEEP_DECISIONS,
                 max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self.limit = limit
        self.max_subscribers = max_subscribers
        self.subscribers: list[Subscriber] = []  # producers test this before building an event
        self.decisions: deque[tuple[int, dict[str, Any], Any]] = deque(maxlen=keep)  # (seq, json, record)
        self.seq = 0
        self.closed = False

    def subscribe(self) -> Subscriber | None:
        """A new reader, or None when the hub is closed or has as many readers as it takes."""
        if self.closed or len(self.subscribers) >= self.max_subscribers:
            return None
        sub = Subscriber(self.limit)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def publish(self, event: Event) -> None:
        self.seq += 1
        data = event.to_json()
        data["seq"] = self.seq  # the event's number (also its SSE id): a decision's explanation is asked by it
        if isinstance(event, DecisionEvent):
            self.decisions.append((self.seq, data, event.record))
        frame = sse_frame(event.kind, data, self.seq)
        for sub in self.subscribers:
            sub.put(frame)

    def decision(self, seq: int) -> tuple[dict[str, Any], Any] | None:
        """A kept decision's JSON and record, by its event number."""
        for kept, data, record in self.decisions:
            if kept == seq:
                return data, record
        return None

    def close(self) -> None:
        """Shutting down: every reader's stream ends, and nobody new may subscribe."""
        self.closed = True
        for sub in self.subscribers:
            sub.close()

