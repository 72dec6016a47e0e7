"""Per-model queues and concurrency slots, on the event loop, with no locks.

Each model has three FIFO lanes (low, normal, high). A waiting ticket is promoted one level per
``queue.agingMs`` so a low-priority request is never starved; because a lane is FIFO its head is
always its most-aged ticket, so picking the next ticket compares three heads: O(1) per dispatch and
O(1) per enqueue, at any queue depth. Cancelled tickets are dropped lazily when they reach a head.

A slot is held for the whole upstream exchange and released exactly once on every path (success,
error, timeout, client disconnect, cancel): ``Slot.release`` is idempotent and the callers hold it in
``try/finally``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .config_types import PRIORITY_WEIGHTS, Config, ModelSpec
from .errors import HttpError
from .routing import ModelState

_LANES = ("low", "normal", "high")


class QueueLimit(HttpError):
    """A global or per-user queue limit was hit (429 with Retry-After)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(429, message, code=code, headers=[("Retry-After", "1")])


class WaitTimeout(Exception):
    """A ticket was not started within its maximum queue time; it has been removed from the queue."""


@dataclass(eq=False, slots=True)
class Ticket:
    model: str
    lane: int  # index into _LANES
    seq: int
    enqueued: float
    user: str | None
    future: asyncio.Future | None = None  # a waiting coroutine (sync requests) ...
    on_start: Callable[["Slot"], None] | None = None  # ... or a callback (jobs: no task per queued job)
    cancelled: bool = False  # withdrawn, or already started


@dataclass(eq=False)
class Slot:
    """A running permit on one model. ``release`` is safe to call any number of times."""

    scheduler: "Scheduler"
    model: str
    user: str | None
    queue_ms: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler._release(self)


@dataclass
class _ModelQueue:
    spec: ModelSpec
    lanes: tuple[deque, deque, deque] = field(default_factory=lambda: (deque(), deque(), deque()))
    waiting: int = 0
    running: int = 0
    peak_running: int = 0


class Scheduler:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.queues: dict[str, _ModelQueue] = {m.name: _ModelQueue(m) for m in cfg.models}
        self.total_waiting = 0
        self.total_running = 0
        self.user_waiting: dict[str, int] = {}
        self.states: dict[str, ModelState] = {m.name: ModelState() for m in cfg.models}
        self._loaded: dict[str, str] = {}  # model -> processor text (lower-cased), from the runtime snapshot
        self._cooldown: set[str] = set()
        self._seq = 0
        self._dispatching = False
        self._aging = max(1, cfg.queue.aging_ms) / 1000.0

    # ---- views for routing and status -----------------------------------------------------------
    def _refresh(self, name: str) -> None:
        q = self.queues[name]
        processor = self._loaded.get(name)
        self.states[name] = ModelState(
            waiting=q.waiting, running=q.running, loaded=processor is not None, processor=processor or "",
            cooldown=name in self._cooldown,
        )

    def set_loaded(self, loaded: dict[str, str]) -> None:
        """Which configured models Ollama has loaded now, with their processor text."""
        if loaded != self._loaded:
            self._loaded = dict(loaded)
            for name in self.queues:
                self._refresh(name)

    def set_cooldown(self, name: str, on: bool) -> None:
        if name in self.queues and (name in self._cooldown) != on:
            (self._cooldown.add if on else self._cooldown.discard)(name)
            self._refresh(name)

    def counts(self, name: str) -> tuple[int, int]:
        q = self.queues[name]
        return q.waiting, q.running

    def snapshot(self) -> dict:
        """The original's QueueSnapshot shape."""
        return {
            "globalQueued": self.total_waiting,
            "globalRunning": self.total_running,
            "byModel": [
                {"model": name, "queued": q.waiting, "running": q.running, "concurrency": q.spec.max_concurrent}
                for name, q in self.queues.items()
            ],
        }

    # ---- admission --------------------------------------------------------------------------------
    def _can_start(self, q: _ModelQueue) -> bool:
        if self.total_running >= self.cfg.queue.global_max_concurrent:
            return False
        if q.spec.exclusive:
            return q.running == 0
        return q.running < q.spec.max_concurrent

    def check_queue_limits(self, user: str | None) -> None:
        """Raise QueueLimit if one more waiting ticket (for ``user``) would exceed a limit."""
        qc = self.cfg.queue
        if self.total_waiting >= qc.global_max_queued:
            raise QueueLimit(f"Global queue limit exceeded: {qc.global_max_queued}", "global_queue_full")
        if user is not None and self.user_waiting.get(user, 0) >= qc.per_user_max_queued:
            raise QueueLimit(f"Per-user queue limit exceeded: {qc.per_user_max_queued}", "user_queue_full")

    def try_acquire(self, model: str, user: str | None = None) -> Slot | None:
        """A slot now if the model can start and nobody is waiting ahead, else None."""
        q = self.queues[model]
        if q.waiting == 0 and self._can_start(q):
            return self._start(q, user, 0)
        return None

    async def acquire(self, model: str, priority: str = "normal", *, user: str | None = None,
                      max_wait: float | None = None) -> Slot:
        """Wait for a slot on ``model``. Raises QueueLimit at once when full, WaitTimeout after ``max_wait``."""
        slot = self.try_acquire(model, user)
        if slot is not None:
            return slot
        ticket = self.enqueue(model, priority, user)
        ticket.future = asyncio.get_running_loop().create_future()
        timer = None
        if max_wait is not None:
            timer = asyncio.get_running_loop().call_later(max(0.0, max_wait), self._expire, ticket)
        try:
            return await ticket.future
        except BaseException:
            fut = ticket.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # started just as we were cancelled: hand the slot back
            else:
                self.cancel(ticket)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def enqueue(self, model: str, priority: str, user: str | None, *, check_limits: bool = True,
                on_start: Callable[[Slot], None] | None = None) -> Ticket:
        """Put a ticket at the back of its lane. Jobs pass ``on_start``, called with the slot when it starts."""
        if check_limits:
            self.check_queue_limits(user)
        q = self.queues[model]
        self._seq += 1
        lane = _LANES.index(priority) if priority in _LANES else 1
        ticket = Ticket(model, lane, self._seq, self.clock(), user, on_start=on_start)
        q.lanes[lane].append(ticket)
        q.waiting += 1
        self.total_waiting += 1
        if user is not None:
            self.user_waiting[user] = self.user_waiting.get(user, 0) + 1
        self._refresh(model)
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting ticket. Returns False if it was already started or withdrawn."""
        if ticket.cancelled:
            return False
        ticket.cancelled = True
        self._unwait(ticket)
        return True

    def _expire(self, ticket: Ticket) -> None:
        if self.cancel(ticket) and ticket.future is not None and not ticket.future.done():
            ticket.future.set_exception(WaitTimeout())

    def _unwait(self, ticket: Ticket) -> None:
        q = self.queues[ticket.model]
        q.waiting -= 1
        self.total_waiting -= 1
        if ticket.user is not None:
            left = self.user_waiting[ticket.user] - 1
            if left:
                self.user_waiting[ticket.user] = left
            else:
                del self.user_waiting[ticket.user]
        self._refresh(ticket.model)

    def _start(self, q: _ModelQueue, user: str | None, queue_ms: int) -> Slot:
        q.running += 1
        q.peak_running = max(q.peak_running, q.running)
        self.total_running += 1
        self._refresh(q.spec.name)
        return Slot(self, q.spec.name, user, queue_ms)

    def _release(self, slot: Slot) -> None:
        self._stop(slot)
        self._dispatch()

    def _stop(self, slot: Slot) -> None:
        q = self.queues[slot.model]
        q.running -= 1
        self.total_running -= 1
        self._refresh(slot.model)

    # ---- dispatch ---------------------------------------------------------------------------------
    def _head(self, q: _ModelQueue, now: float) -> tuple[float, int, Ticket] | None:
        """The best waiting ticket of a model as (effective priority, -seq, ticket)."""
        best = None
        for lane in q.lanes:
            while lane and lane[0].cancelled:
                lane.popleft()
            if lane:
                t = lane[0]
                level = min(2, t.lane + int((now - t.enqueued) / self._aging))
                key = (level, -t.seq, t)
                if best is None or key[:2] > best[:2]:
                    best = key
        return best

    def _dispatch(self) -> None:
        """Start waiting tickets while slots allow, best effective priority first across models.

        Re-entrant calls (a job callback releasing at once) return early; the outer loop picks the slot up.
        """
        if self._dispatching:
            return
        self._dispatching = True
        try:
            self._dispatch_loop()
        finally:
            self._dispatching = False

    def _dispatch_loop(self) -> None:
        while self.total_waiting and self.total_running < self.cfg.queue.global_max_concurrent:
            now = self.clock()
            best = None
            best_q = None
            for q in self.queues.values():
                if q.waiting and self._can_start(q):
                    head = self._head(q, now)
                    if head is not None and (best is None or head[:2] > best[:2]):
                        best, best_q = head, q
            if best is None or best_q is None:
                return
            ticket = best[2]
            best_q.lanes[ticket.lane].popleft()
            self._unwait(ticket)
            ticket.cancelled = True  # no longer withdrawable
            slot = self._start(best_q, ticket.user, int((now - ticket.enqueued) * 1000))
            self._hand_over(ticket, slot)

    def _hand_over(self, ticket: Ticket, slot: Slot) -> None:
        if ticket.on_start is not None:
            ticket.on_start(slot)
            return
        fut = ticket.future
        if fut is None or fut.done():
            # The waiter went away between its cancellation and its cleanup: undo without re-dispatching here.
            slot.released = True
            self._stop(slot)
            return
        fut.set_result(slot)

    def priority_weight(self, priority: str) -> int:
        return PRIORITY_WEIGHTS.get(priority, PRIORITY_WEIGHTS[self.cfg.queue.default_priority])
