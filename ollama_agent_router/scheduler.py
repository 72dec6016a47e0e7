"""Per-model queues and concurrency slots: decisions in plain code, effects behind a small interface.

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
``queue.loadBatching: false`` turns this off; ``queue.agingMs: 0`` turns aging off. With
``queue.steerEvictions`` the router picks what a load unloads (``eviction.steered``) and unloads it first.

The shape is llama-swap's: ``grant`` (which ticket starts next) and ``hold_until`` (is a load held back)
are pure functions of plain data; ``Scheduler`` keeps the queues and calls them, synchronously, and
everything it needs done — a wake-up timer, telling the model lifecycle — goes through ``Effects``.
Waiting with a future and a deadline is the thin ``acquire`` shell in ``waiting.py``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Container, Protocol, Sequence

from .config.schema import PRIORITY_WEIGHTS, Config, ModelSpec
from .errors import HttpError
from .eviction import Demand, Resident, evictions, free_vram, required_mb, steered
from .routing import ModelState

_LANES = ("low", "normal", "high")
FOREVER = float("inf")


class QueueLimit(HttpError):
    """A global or per-user queue limit was hit (429 with Retry-After)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(429, message, code=code, headers=[("Retry-After", "1")])


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Effects(Protocol):
    """What the scheduler needs done: one timer, and telling the model lifecycle what happened."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` after ``delay`` seconds (the scheduler's only timer: a held-back load's wake-up)."""

    def load_deferred(self, model: str) -> None:
        """A load of ``model`` was held back to let a loaded model serve its queue."""

    def model_busy(self, model: str) -> None:
        """``model`` has something running or waiting again."""

    def model_idle(self, model: str) -> None:
        """``model`` has nothing running and nothing waiting any more."""

    async def unload(self, models: Sequence[str]) -> None: ...  # unload these idle models now (steering)


@dataclass(eq=False, slots=True)
class Ticket:
    model: str
    lane: int  # index into _LANES
    seq: int
    enqueued: float
    user: str | None
    on_start: Callable[["Slot"], None]  # given the slot when the ticket starts
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
    unload: tuple[str, ...] = ()  # idle models to unload before this slot's request (steered evictions)
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler._release(self)


# ---- the decisions: pure functions -------------------------------------------------------------------
def level(ticket: Ticket, now: float, aging: float) -> int:
    """A ticket's effective priority: its lane, promoted one level per aging step, at most high."""
    return min(2, ticket.lane + int((now - ticket.enqueued) / aging))


def hold_until(ticket: Ticket, now: float, aging: float, protected: int, loaded: Container[str],
               evicts: Callable[[str], bool], needs_busy: Callable[[str], bool] | None = None) -> float | None:
    """Until when the start of ``ticket`` is held back (None: it may start now), when its model is not loaded:
    loading it would evict another while a loaded model has requests waiting at ``protected`` priority or
    above (a priority above that, or one aging step, lets it through); or, with steered evictions, it should
    unload a busy model (Ollama would wait for that too). Either wait is at most half its queue budget."""
    if ticket.model in loaded:
        return None
    budget = FOREVER if ticket.deadline is None else ticket.enqueued + (ticket.deadline - ticket.enqueued) / 2
    if 0 <= protected and ticket.lane <= protected:
        until = min(budget, ticket.enqueued + aging)
        if now < until and evicts(ticket.model):
            return until
    until = budget if budget < FOREVER else ticket.enqueued + aging  # a busy model's wait
    if needs_busy is not None and now < until and needs_busy(ticket.model):
        return until
    return None


def grant(heads: Sequence[Ticket], now: float, aging: float, protected: int, loaded: Container[str],
          evicts: Callable[[str], bool], needs_busy: Callable[[str], bool] | None = None,
          ) -> tuple[Ticket | None, list[tuple[Ticket, float]]]:
    """Which of the startable models' head tickets starts next, and which were held back (with until when).

    The best effective priority wins, the oldest among equals; a held-back head gives way to the next best.
    """
    best: Ticket | None = None
    best_key = (-1, 0)
    held: list[tuple[Ticket, float]] = []
    may_hold = protected >= 0 or needs_busy is not None  # else nothing is ever held: skip the check per head
    for t in heads:
        key = (min(2, t.lane + int((now - t.enqueued) / aging)), -t.seq)  # level(), inlined: this is per dispatch
        if key <= best_key:
            continue
        until = hold_until(t, now, aging, protected, loaded, evicts, needs_busy) if may_hold else None
        if until is None:
            best, best_key = t, key
        else:
            held.append((t, until))
    return best, held


# ---- the state the decisions read --------------------------------------------------------------------
@dataclass
class _ModelQueue:
    spec: ModelSpec
    lanes: tuple[deque, deque, deque] = field(default_factory=lambda: (deque(), deque(), deque()))
    waiting: int = 0
    running: int = 0
    by_lane: list[int] = field(default_factory=lambda: [0, 0, 0])  # live tickets per lane (low, normal, high)

    def head(self, now: float, aging: float) -> Ticket | None:
        """The best waiting ticket: of the three lane heads (a FIFO lane's head is its oldest), the one with
        the best effective priority, the oldest among equals."""
        best = None
        best_key = (-1, 0)
        for lane in self.lanes:
            while lane and lane[0].cancelled:
                lane.popleft()
            if lane:
                t = lane[0]
                key = (min(2, t.lane + int((now - t.enqueued) / aging)), -t.seq)  # level(), inlined
                if key > best_key:
                    best, best_key = t, key
        return best

    def top_lane(self) -> int:
        """The highest lane with a live ticket (-1 if none)."""
        for i in (2, 1, 0):
            lane = self.lanes[i]
            while lane and lane[0].cancelled:
                lane.popleft()
            if lane:
                return i
        return -1


class Scheduler:
    def __init__(self, cfg: Config, effects: Effects, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.effects = effects
        self.clock = clock
        self.queues: dict[str, _ModelQueue] = {m.name: _ModelQueue(m) for m in cfg.models}
        self.total_waiting = 0
        self.total_running = 0
        self.user_waiting: dict[str, int] = {}
        self.states: dict[str, ModelState] = {m.name: ModelState() for m in cfg.models}
        reserve = cfg.gpu.vram_safety_reserve_mb
        self._required = {m.name: required_mb(m, reserve) for m in cfg.models}
        self._keep = {m.name: FOREVER if m.pinned else 0.0 for m in cfg.models}  # Ollama's eviction order
        self._loaded: dict[str, str] = {}  # model -> processor text (lower-cased), from the runtime snapshot
        self._free_mb: float | None = None  # measured free VRAM, from the runtime snapshot
        self._cooldown: dict[str, float] = {}  # model -> clock time the cooldown ends
        self._seq = 0
        self._dispatching = False
        self._aging = cfg.queue.aging_ms / 1000.0 if cfg.queue.aging_ms > 0 else FOREVER  # 0: no aging
        self._steer = cfg.queue.steer_evictions
        self._demand = Demand()
        self._wake: Cancellable | None = None
        self._wake_at = 0.0

    # ---- facts pushed in ----------------------------------------------------------------------------
    def _refresh(self, name: str) -> None:
        q = self.queues[name]
        processor = self._loaded.get(name)
        self.states[name] = ModelState(
            waiting=q.waiting, running=q.running, loaded=processor is not None, processor=processor or "",
            cooldown=name in self._cooldown,
        )

    def set_loaded(self, loaded: dict[str, str], free_mb: float | None) -> None:
        """Which configured models Ollama has loaded now (with their processor text), and the free VRAM."""
        self._free_mb = free_mb
        if loaded != self._loaded:
            self._loaded = dict(loaded)
            for name in self.queues:
                self._refresh(name)
        self._dispatch()  # a held-back load may go ahead now

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def _residents(self) -> tuple[list[Resident], float | None]:
        """The loaded models as the eviction choices see them, and the free VRAM."""
        now = self.clock()
        resident = [Resident(n, self._required[n], self._keep[n], q.running > 0, q.waiting > 0,
                             self._demand.of(n, now))
                    for n in self._loaded if (q := self.queues.get(n)) is not None]
        return resident, free_vram(self._free_mb, self.cfg.gpu.vram_total_mb, resident)

    def would_evict(self, model: str) -> bool:
        """Starting ``model`` now would make Ollama unload another model."""
        if model in self._loaded:
            return False
        resident, free = self._residents()
        return bool(evictions(self._required[model], resident, free))

    def needs_busy(self, model: str) -> bool:
        """Steered, loading ``model`` would wait for a busy model to finish."""
        return model not in self._loaded and steered(self._required[model], *self._residents())[1]

    def _make_room(self, model: str) -> tuple[str, ...]:
        """The models to unload for ``model`` (``steered``), counted gone, and ``model`` loaded, at once."""
        if model in self._loaded:
            return ()
        victims = steered(self._required[model], *self._residents())[0]
        if self._free_mb is not None:
            self._free_mb += sum(self._required[v] for v in victims) - self._required[model]
        for name in victims:
            del self._loaded[name]
        self._loaded[model] = ""
        for name in (*victims, model):
            self._refresh(name)
        return victims

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

    # ---- reads ----------------------------------------------------------------------------------------
    def counts(self, name: str) -> tuple[int, int]:
        q = self.queues[name]
        return q.waiting, q.running

    def waiting_by_priority(self, name: str) -> dict[str, int]:
        return dict(zip(_LANES, self.queues[name].by_lane))

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

    def priority_weight(self, priority: str) -> int:
        return PRIORITY_WEIGHTS.get(priority, PRIORITY_WEIGHTS[self.cfg.queue.default_priority])

    # ---- admission ------------------------------------------------------------------------------------
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
        if model not in self._loaded and (
                (_lane(priority) <= self._protected_lane() and self.would_evict(model))
                or (self._steer and self.needs_busy(model))):
            return None  # the queued ticket decides, with the deferral rules
        return self._start(q, user, 0)

    def enqueue(self, model: str, priority: str, user: str | None, on_start: Callable[[Slot], None], *,
                check_limits: bool = True, max_wait: float | None = None) -> Ticket:
        """Put a ticket at the back of its lane and start what can start; ``on_start`` gets the slot
        when the ticket starts (possibly before this returns)."""
        if check_limits:
            self.check_queue_limits(user)
        q = self.queues[model]
        self._seq += 1
        now = self.clock()
        ticket = Ticket(model, _lane(priority), self._seq, now, user, on_start,
                        deadline=None if max_wait is None else now + max_wait)
        q.lanes[ticket.lane].append(ticket)
        if q.waiting == 0 and q.running == 0:
            self.effects.model_busy(model)
        q.waiting += 1
        q.by_lane[ticket.lane] += 1
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

    def _unwait(self, ticket: Ticket) -> None:
        q = self.queues[ticket.model]
        q.waiting -= 1
        q.by_lane[ticket.lane] -= 1
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
        name = q.spec.name
        if q.waiting == 0 and q.running == 0:
            self.effects.model_busy(name)
        unload = ()
        if self._steer:  # only steering reads the demand, and only it unloads
            unload = self._make_room(name)
            self._demand.count(name, self.clock())
        q.running += 1
        self.total_running += 1
        self._refresh(name)
        return Slot(self, name, user, queue_ms, unload)

    def _release(self, slot: Slot) -> None:
        q = self.queues[slot.model]
        q.running -= 1
        self.total_running -= 1
        self._refresh(slot.model)
        if q.running == 0 and q.waiting == 0:
            self.effects.model_idle(slot.model)
        self._dispatch()

    # ---- dispatch -------------------------------------------------------------------------------------
    def _protected_lane(self) -> int:
        """The highest priority waiting on a loaded model (-1 if none, or load batching is off): loads below
        it are held back."""
        if not self.cfg.queue.load_batching:
            return -1
        return max((self.queues[n].top_lane() for n in self._loaded if n in self.queues and self.queues[n].waiting),
                   default=-1)

    def _dispatch(self) -> None:
        """Start waiting tickets while slots allow, best effective priority first across models.

        Re-entrant calls (a job callback releasing at once) return early; the outer loop picks the slot up.
        """
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self.total_waiting and self.total_running < self.cfg.queue.global_max_concurrent:
                if not self._start_next():
                    return
        finally:
            self._dispatching = False

    def _start_next(self) -> bool:
        now = self.clock()
        startable = (q.head(now, self._aging) for q in self.queues.values() if q.waiting and self._can_start(q))
        heads = [h for h in startable if h is not None]
        if not heads:
            return False  # every model with waiters is at its limit: nothing to decide
        ticket, held = grant(heads, now, self._aging, self._protected_lane(), self._loaded, self.would_evict,
                             self.needs_busy if self._steer else None)
        for t, until in held:
            if not t.deferred:
                t.deferred = True
                self.effects.load_deferred(t.model)
            self._wake_up_at(until)
        if ticket is None:
            return False
        q = self.queues[ticket.model]
        q.lanes[ticket.lane].popleft()
        ticket.cancelled = True  # no longer withdrawable
        slot = self._start(q, ticket.user, int((now - ticket.enqueued) * 1000))
        self._unwait(ticket)
        ticket.on_start(slot)
        return True

    def _wake_up_at(self, when: float) -> None:
        if when == FOREVER or (self._wake is not None and self._wake_at <= when):
            return  # held until a release or a new fact, which dispatch anyway
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        self._wake = self.effects.call_later(max(0.0, when - self.clock()), self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._dispatch()


def _lane(priority: str) -> int:
    return _LANES.index(priority) if priority in _LANES else 1


def priority_name(weight: int) -> str:
    """The priority whose weight (10, 50, 90) is nearest: stored jobs keep the weight."""
    return min(PRIORITY_WEIGHTS, key=lambda p: abs(PRIORITY_WEIGHTS[p] - weight))
