"""The simulated Ollama scheduler (wire-formats §3): runners, slots, the pending queue, VRAM and keep-alive.

One worker task takes queued requests in order and does not look at the next until the current one has a
runner, so a slow load blocks everything behind it, as in Ollama. A request for a model that is loaded (or
loading) attaches to its runner directly. Everything waits on futures, events and loop timers.

One deliberate simplification: every waiting request (for a load, or for a busy slot) counts against
``max_queue``. Ollama lets requests for a loaded model wait inside the runner without limit; counting them
makes the 503 "queue full" path reachable with small numbers, which is what routers need to test.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..log import Logger
from .activity import Activity

LOADED_OVERHEAD = 1.15  # loaded size over on-disk size: weights plus KV cache and compute graph
GB = 1_000_000_000
MIB = 1024 * 1024


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Runner:
    name: str
    size: int  # bytes the loaded model occupies
    size_vram: int  # the part of it on the GPU
    num_ctx: int
    slots: int
    keep_alive: float | None  # seconds after going idle; None = forever
    state: str = "loading"  # loading | loaded
    refs: int = 0  # attached requests: waiting for a slot or generating
    busy: int = 0  # slots generating now
    expired: bool = False  # marked to unload once idle; takes no new requests
    expires_at: float = math.inf  # monotonic; kept stale while busy, as Ollama does
    timer: asyncio.TimerHandle | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    slot_waiters: deque = field(default_factory=deque)


@dataclass(eq=False)
class _Pending:
    name: str
    size: int
    load_s: float
    slots: int
    keep_alive: float | None
    num_ctx: int
    fut: asyncio.Future


class ModelScheduler:
    def __init__(
        self, *, vram_bytes: int, reserved_bytes: int, max_queue: int, max_loaded: int,
        log: Logger, on_load: Callable[[str], None], activity: Activity | None = None,
    ) -> None:
        self.usable_vram = max(0, vram_bytes - reserved_bytes)
        self.max_queue = max_queue
        self.max_loaded = max(1, max_loaded)
        self.log = log
        self.on_load = on_load
        self.activity = activity or Activity()
        self.runners: dict[str, Runner] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.waiting = 0
        self._pending: deque[_Pending] = deque()
        self._worker: asyncio.Task | None = None

    # ---- accounting -------------------------------------------------------------------------
    def vram_used(self) -> int:
        return sum(r.size_vram for r in self.runners.values())

    def generating(self) -> int:
        return sum(self.in_flight.values())

    def loading(self) -> list[Runner]:
        return [r for r in self.runners.values() if r.state == "loading"]

    def _admit_wait(self) -> None:
        if self.waiting >= self.max_queue:
            raise QueueFull()

    # ---- attaching to a runner ----------------------------------------------------------------
    async def attach(self, name: str, *, size: int, load_s: float, slots: int, keep_alive: float | None,
                     num_ctx: int) -> Runner:
        """A runner for ``name`` with this request counted on it; loads (through the queue) when needed.

        Raises QueueFull. Cancellation while waiting leaves nothing counted.
        """
        runner = self.runners.get(name)
        if runner is not None and not runner.expired and runner.num_ctx == num_ctx:
            self._ref(runner, keep_alive)
            if runner.state == "loading":
                await self._wait_ready(runner)
            return runner
        self._admit_wait()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(name, size, load_s, slots, keep_alive, num_ctx, fut))
        self.waiting += 1
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.detach(fut.result())  # the worker handed it over just as we were cancelled
            raise
        finally:
            self.waiting -= 1

    async def _wait_ready(self, runner: Runner) -> None:
        try:
            self._admit_wait()
        except QueueFull:
            self.detach(runner)
            raise
        self.waiting += 1
        try:
            await runner.ready.wait()
        except asyncio.CancelledError:
            self.detach(runner)
            raise
        finally:
            self.waiting -= 1

    def _ref(self, runner: Runner, keep_alive: float | None) -> None:
        runner.refs += 1
        runner.keep_alive = keep_alive  # the latest request's keep-alive wins
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    def detach(self, runner: Runner) -> None:
        runner.refs -= 1
        if runner.refs == 0 and runner.state == "loaded":
            self._idle(runner)

    # ---- slots ------------------------------------------------------------------------------------
    async def take_slot(self, runner: Runner) -> None:
        """Wait, first come first served, for one of the runner's parallel slots. Raises QueueFull."""
        if runner.busy < runner.slots and not runner.slot_waiters:
            runner.busy += 1
            self._count(runner)
            return
        self._admit_wait()
        fut = asyncio.get_running_loop().create_future()
        runner.slot_waiters.append(fut)
        self.waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.free_slot(runner)  # the slot was passed to us as we were cancelled
            raise
        finally:
            self.waiting -= 1

    def free_slot(self, runner: Runner) -> None:
        while runner.slot_waiters:
            fut = runner.slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight on; busy stays the same
                return
        runner.busy -= 1
        self._count(runner)

    def _count(self, runner: Runner) -> None:
        self.in_flight[runner.name] = runner.busy
        self.activity.slots_busy(runner.name, runner.busy)
        self.peak[runner.name] = max(self.peak.get(runner.name, 0), runner.busy)

    # ---- unloading ----------------------------------------------------------------------------------
    def unload(self, name: str) -> None:
        """The keep_alive:0 request: mark the runner expired; it goes as soon as it is idle."""
        runner = self.runners.get(name)
        if runner is None:
            return
        runner.expired = True
        runner.expires_at = time.monotonic()
        if runner.refs == 0 and runner.state == "loaded":
            self._drop(runner, "unload request")

    def _idle(self, runner: Runner) -> None:
        if self.runners.get(runner.name) is not runner:
            return
        if runner.expired or runner.keep_alive == 0:
            self._drop(runner, "expired" if runner.expired else "keep_alive 0")
            return
        if runner.keep_alive is None:
            runner.expires_at = math.inf
            return
        runner.expires_at = time.monotonic() + runner.keep_alive
        loop = asyncio.get_running_loop()
        runner.timer = loop.call_later(runner.keep_alive, self._drop, runner, "keep_alive expired")

    def _drop(self, runner: Runner, reason: str) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if self.runners.get(runner.name) is runner:
            del self.runners[runner.name]
            self.activity.unloaded(runner.name)
            self.log.info("sim_model_unloaded", model=runner.name, reason=reason)
        runner.gone.set()

    def reset(self) -> None:
        """Ollama went away: every runner and queued request is lost."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        while self._pending:
            self._pending.popleft().fut.cancel()
        for runner in list(self.runners.values()):
            self._drop(runner, "server down")

    # ---- the worker ------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        while self._pending:
            head = self._pending[0]
            if head.fut.done():  # its client went away while queued
                self._pending.popleft()
                continue
            runner = await self._runner_for(head)
            self._pending.popleft()
            if head.fut.done():
                if runner.refs == 0:
                    self._idle(runner)
                continue
            self._ref(runner, head.keep_alive)
            head.fut.set_result(runner)

    async def _runner_for(self, want: _Pending) -> Runner:
        while (runner := self.runners.get(want.name)) is not None:
            if not runner.expired and runner.num_ctx == want.num_ctx:
                return runner
            # Expired, or loaded with other runner options: it must go before the model loads again.
            runner.expired = True
            if runner.refs == 0 and runner.state == "loaded":
                self._drop(runner, "reload")
            else:
                await runner.gone.wait()
        await self._make_room(want.size)
        alone = not self.runners
        size_vram = min(want.size, self.usable_vram) if alone else want.size
        runner = Runner(want.name, want.size, size_vram, want.num_ctx, want.slots, want.keep_alive)
        runner.expires_at = math.inf if want.keep_alive is None else time.monotonic() + want.keep_alive
        self.runners[want.name] = runner
        self.on_load(want.name)
        self.activity.load_started(want.name)
        self.log.info("sim_model_loading", model=want.name, size=want.size, sizeVram=size_vram)
        started = time.monotonic()
        try:
            if want.load_s > 0:
                await asyncio.sleep(want.load_s)
        finally:
            self.activity.load_ended(want.name, time.monotonic() - started)
        runner.state = "loaded"
        runner.ready.set()
        return runner

    async def _make_room(self, size: int) -> None:
        """Evict until the new model may load: under max_loaded and, unless alone, fully in free VRAM."""
        while self.runners and (
            len(self.runners) >= self.max_loaded or size > self.usable_vram - self.vram_used()
        ):
            victim = self._victim()
            if victim.refs == 0:
                self._drop(victim, "evicted")
            else:
                victim.expired = True
                await victim.gone.wait()

    def _victim(self) -> Runner:
        """Not LRU: shortest keep-alive first (forever last), the first idle one, else the first overall."""
        def order(r: Runner) -> tuple[bool, float, str]:
            return (not r.expired, math.inf if r.keep_alive is None else r.keep_alive, r.name)

        ranked = sorted(self.runners.values(), key=order)
        return next((r for r in ranked if r.refs == 0), ranked[0])
