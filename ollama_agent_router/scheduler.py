"""Per-model queues and concurrency slots, on the event loop, with no locks.

Each model has three FIFO lanes (low, normal, high). A waiting ticket is promoted one level per
``queue.agingMs`` so a low-priority request is never starved; because a lane is FIFO its head is
always its most-aged ticket, so picking the next ticket compares three heads: O(1) per dispatch and
O(1) per enqueue, at any queue depth. Cancelled tickets are dropped lazily when they reach a head.

A slot is held for the whole upstream exchange and released exactly once on every path (success,
error, timeout, client disconnect, cancel): ``Slot.release`` is idempotent and the callers hold it in
``try/finally``.

Load batching: starting a model that is not loaded makes Ollama load it, and when it does not fit it
unloads another. While a loaded model still has requests waiting here, such a load is held back, unless
the new request's priority is higher or it has waited one aging step (half its queue budget at most).
The scheduler only decides; whether a load would evict is asked of ``Effects`` (``lifecycle.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .config.schema import PRIORITY_WEIGHTS, Config, ModelSpec
from .errors import HttpError
from .routing import ModelState

_LANES = ("low", "normal", "high")


class QueueLimit(HttpError):
    """A global or per-user queue limit was hit (429 with Retry-After)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(429, message, code=code, headers=[("Retry-After", "1")])


class WaitTimeout(Exception):
    """A ticket was not started within its maximum queue time; it has been removed from the queue."""


class Effects(Protocol):
    """What the scheduler asks of, and tells, the model lifecycle."""

    def would_evict(self, model: str) -> bool:
        """Starting ``model`` now would make Ollama unload another model."""

    def load_deferred(self, model: str) -> None:
        """A load of ``model`` was held back to let a loaded model serve its queue."""

    def model_idle(self, model: str) -> None:
        """``model`` has nothing running and nothing waiting any more."""


class NoEffects:
    def would_evict(self, model: str) -> bool:
        return False

    def load_deferred(self, model: str) -> None:
        pass

    def model_idle(self, model: str) -> None:
        pass


@dataclass(eq=False, slots=True)
class Ticket:
    model: str
    lane: int  # index into _LANES
    seq: int
    enqueued: float
    user: str | None
    future: asyncio.Future | None = None  # a waiting coroutine (sync requests) ...
    on_start: Callable[["Slot"], None] | None = None  # ... or a callback (jobs: no task per queued job)
    deadline: float | None = None  # clock time after which a sync waiter gives up
    cancelled: bool = False  # withdrawn, or already started
    deferred: bool = False  # its model's load has been held back at least once


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
        self.effects: Effects = NoEffects()
        self.queues: dict[str, _ModelQueue] = {m.name: _ModelQueue(m) for m in cfg.models}
        self.total_waiting = 0
        self.total_running = 0
        self.user_waiting: dict[str, int] = {}
        self.states: dict[str, ModelState] = {m.name: ModelState() for m in cfg.models}
        self._loaded: dict[str, str] = {}  # model -> processor text (lower-cased), from the runtime snapshot
        self._cooldown: dict[str, float] = {}  # model -> clock time the cooldown ends
        self._seq = 0
        self._dispatching = False
        self._aging = max(1, cfg.queue.aging_ms) / 1000.0
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0

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
            self._dispatch()  # a held-back load may go ahead now

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def set_cooldown(self, name: str, until: float | None) -> None:
        """Put a model in cooldown until a clock time, or take it out (``None``)."""
        if name not in self.queues:
            return
        if until is None:
            if self._cooldown.pop(name, None) is not None:
                self._refresh(name)
        else:
            self._cooldown[name] = until
            self._refresh(name)

    def counts(self, name: str) -> tuple[int, int]:
        q = self.queues[name]
        return q.waiting, q.running

    def snapshot(self) -> dict:
        """The original's QueueSnapshot shape; a model in cooldown also says so and for how long."""
        now = self.clock()
        by_model = []
        for name, q in self.queues.items():
            entry: dict = {"model": name, "queued": q.waiting, "running": q.running,
                           "concurrency": q.spec.max_concurrent}
            until = self._cooldown.get(name)
            if until is not None:
                entry["cooldown"] = True
                entry["cooldownRemainingMs"] = max(0, int((until - now) * 1000))
            by_model.append(entry)
        return {"globalQueued": self.total_waiting, "globalRunning": self.total_running, "byModel": by_model}

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

    def try_acquire(self, model: str, user: str | None = None, priority: str = "normal") -> Slot | None:
        """A slot now if the model can start, nobody is waiting ahead and no load is held back, else None."""
        q = self.queues[model]
        if q.waiting or not self._can_start(q):
            return None
        lane = _lane(priority)
        if model not in self._loaded and lane <= self._protected_lane() and self.effects.would_evict(model):
            return None  # the queued ticket decides, with the deferral rules
        return self._start(q, user, 0)

    async def acquire(self, model: str, priority: str = "normal", *, user: str | None = None,
                      max_wait: float | None = None) -> Slot:
        """Wait for a slot on ``model``. Raises QueueLimit at once when full, WaitTimeout after ``max_wait``."""
        slot = self.try_acquire(model, user, priority)
        if slot is not None:
            return slot
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        ticket = self.enqueue(model, priority, user, future=future, max_wait=max_wait)
        timer = None
        if max_wait is not None and not future.done():
            timer = loop.call_later(max(0.0, max_wait), self._expire, ticket)
        try:
            return await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()  # started just as we were cancelled: hand the slot back
            else:
                self.cancel(ticket)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def enqueue(self, model: str, priority: str, user: str | None, *, check_limits: bool = True,
                on_start: Callable[[Slot], None] | None = None, future: asyncio.Future | None = None,
                max_wait: float | None = None) -> Ticket:
        """Put a ticket at the back of its lane and start what can start.

        Jobs pass ``on_start``, called with the slot when the ticket starts (possibly before this returns).
        """
        if check_limits:
            self.check_queue_limits(user)
        q = self.queues[model]
        self._seq += 1
        now = self.clock()
        ticket = Ticket(model, _lane(priority), self._seq, now, user, future=future, on_start=on_start,
                        deadline=None if max_wait is None else now + max_wait)
        q.lanes[ticket.lane].append(ticket)
        q.waiting += 1
        self.total_waiting += 1
        if user is not None:
            self.user_waiting[user] = self.user_waiting.get(user, 0) + 1
        self._refresh(model)
        self._dispatch()
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting ticket. Returns False if it was already started or withdrawn."""
        if ticket.cancelled:
            return False
        ticket.cancelled = True
        self._unwait(ticket)
        # A withdrawn ticket may have been what held another model's load back.
        self._dispatch()
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
        if q.waiting == 0 and q.running == 0:
            self.effects.model_idle(ticket.model)

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
        if q.running == 0 and q.waiting == 0:
            self.effects.model_idle(slot.model)

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

    def _protected_lane(self) -> int:
        """The highest priority waiting on a loaded model (-1 if none): loads below it are held back."""
        best = -1
        for name in self._loaded:
            q = self.queues.get(name)
            if q is None or not q.waiting:
                continue
            for i in range(2, best, -1):
                lane = q.lanes[i]
                while lane and lane[0].cancelled:
                    lane.popleft()
                if lane:
                    best = i
                    break
        return best

    def _held_back(self, q: _ModelQueue, ticket: Ticket, protected: int, now: float) -> bool:
        """Hold a load back unless the ticket's priority or age demands it (see the module docstring)."""
        name = q.spec.name
        if protected < 0 or ticket.lane > protected or name in self._loaded:
            return False
        patience = self._aging
        if ticket.deadline is not None:
            patience = min(patience, (ticket.deadline - ticket.enqueued) / 2)
        until = ticket.enqueued + patience
        if now >= until or not self.effects.would_evict(name):
            return False
        if not ticket.deferred:
            ticket.deferred = True
            self.effects.load_deferred(name)
        self._wake_up_at(until)
        return True

    def _wake_up_at(self, when: float) -> None:
        if self._wake is not None and self._wake_at <= when:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        self._wake = asyncio.get_running_loop().call_later(max(0.0, when - self.clock()), self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._dispatch()

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
            protected = self._protected_lane()
            best = None
            best_q = None
            for q in self.queues.values():
                if q.waiting and self._can_start(q):
                    head = self._head(q, now)
                    if head is None or (best is not None and head[:2] <= best[:2]):
                        continue
                    if not self._held_back(q, head[2], protected, now):
                        best, best_q = head, q
            if best is None or best_q is None:
                return
            ticket = best[2]
            best_q.lanes[ticket.lane].popleft()
            ticket.cancelled = True  # no longer withdrawable
            slot = self._start(best_q, ticket.user, int((now - ticket.enqueued) * 1000))
            self._unwait(ticket)
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


def _lane(priority: str) -> int:
    return _LANES.index(priority) if priority in _LANES else 1


def priority_name(weight: int) -> str:
    """The priority whose weight (10, 50, 90) is nearest: stored jobs keep the weight."""
    return min(PRIORITY_WEIGHTS, key=lambda p: abs(PRIORITY_WEIGHTS[p] - weight))
