"""Model lifecycle: keep-alive refreshes, pinned and prewarmed models, and the load-batching guard.

Ollama's OpenAI layer ignores ``keep_alive``: after every ``/v1`` request a model gets the server's
default keep-alive (the last request's value wins). So when a model goes idle the router sends it one
load-only native request, ``/api/generate`` with no prompt and ``keep_alive`` set to ``ollama.keepAlive``
(``-1`` for a pinned model), a short moment later so that a burst of requests costs one refresh. The
refresh goes only to a model that is still loaded: it must never bring back a model Ollama has unloaded.

Pinned and prewarmed models are loaded at start-up; a pinned model that has gone (evicted, Ollama
restarted) is loaded again by a check every ``PIN_CHECK_S``. Everything runs on loop timers: one per
model that has just gone idle, one for the pinned models; no task polls.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Coroutine

from .upstream import UpstreamError

if TYPE_CHECKING:
    from .app import App

REFRESH_DELAY_S = 5.0  # idle this long before the refresh: a burst of requests is one refresh
PIN_CHECK_S = 30.0


def keep_alive_value(text: str) -> int | str:
    """Ollama takes a duration string or a number of seconds; a bare integer is sent as a number."""
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


class Residency:
    """The scheduler's ``Effects``: it is told when models go idle and asked whether a load would evict."""

    def __init__(self, app: "App") -> None:
        self.app = app
        self.cfg = app.cfg
        self.keep_alive = keep_alive_value(self.cfg.ollama.keep_alive)
        self.refresh_delay = REFRESH_DELAY_S
        self.pin_interval = PIN_CHECK_S
        self._pinned = [m.name for m in self.cfg.models if m.pinned]
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pin_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loading: set[str] = set()

    @property
    def pending_refreshes(self) -> list[str]:
        """Models whose keep-alive refresh timer is running."""
        return list(self._timers)

    def keep_alive_for(self, model: str) -> int | str:
        return -1 if self.app.table.models[model].pinned else self.keep_alive

    # ---- start and stop -----------------------------------------------------------------------------
    def start(self) -> None:
        warm = [m.name for m in self.cfg.models if m.prewarm or m.pinned]
        if warm:
            self._spawn(self._warm(warm))
        if self._pinned:
            self._arm_pin_check()

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._pin_timer is not None:
            self._pin_timer.cancel()
            self._pin_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _warm(self, names: list[str]) -> None:
        # One at a time: Ollama loads one model at a time anyway, and a failure is logged per model.
        for name in names:
            await self._load(name, "prewarm")

    # ---- the scheduler's effects --------------------------------------------------------------------
    def would_evict(self, model: str) -> bool:
        """Loading ``model`` would not fit beside the loaded models (free VRAM from the runtime snapshot)."""
        sched = self.app.scheduler
        if sched.is_loaded(model):
            return False
        table = self.app.table
        free = self.app.snapshot.gpu_free_mb
        if free is None:
            total = self.cfg.gpu.vram_total_mb
            if total <= 0:
                return False  # nothing known about memory: no reason to hold anything back
            free = total - sum(table.required_mb[m] for m in table.models if sched.is_loaded(m))
        return table.required_mb[model] > free

    def load_deferred(self, model: str) -> None:
        self.app.metrics.loads_avoided.inc(model)
        self.app.log.debug("model_load_deferred", model=model)

    def model_idle(self, model: str) -> None:
        old = self._timers.pop(model, None)
        if old is not None:
            old.cancel()
        self._timers[model] = asyncio.get_running_loop().call_later(self.refresh_delay, self._refresh, model)

    # ---- refreshing ---------------------------------------------------------------------------------
    def _refresh(self, model: str) -> None:
        del self._timers[model]
        sched = self.app.scheduler
        waiting, running = sched.counts(model)
        if waiting or running or not sched.is_loaded(model):
            return  # in use again (its next idle moment refreshes), or gone (it must not come back)
        self._spawn(self._load(model, "keep_alive"))

    def _arm_pin_check(self) -> None:
        self._pin_timer = asyncio.get_running_loop().call_later(self.pin_interval, self._pin_tick)

    def _pin_tick(self) -> None:
        self._arm_pin_check()
        self.check_pinned()

    def check_pinned(self) -> None:
        """Load again every pinned model that Ollama no longer has loaded."""
        sched = self.app.scheduler
        for name in self._pinned:
            if not sched.is_loaded(name):
                self._spawn(self._load(name, "pinned"))

    def _spawn(self, coro: Coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model: str, reason: str) -> bool:
        """One load-only request; it loads the model if needed and sets its keep-alive."""
        if model in self._loading:
            return False
        self._loading.add(model)
        keep_alive = self.keep_alive_for(model)
        body = {"model": model, "keep_alive": keep_alive, "stream": False}
        try:
            status, reply = await self.app.client.post_json(
                f"{self.cfg.ollama.native_api_base_path}/generate", body,
                timeout=self.cfg.ollama.request_timeout_ms / 1000)
        except UpstreamError as e:
            self.app.log.warning("model_load_failed", model=model, reason=reason, error=e.message)
            return False
        finally:
            self._loading.discard(model)
        if status >= 400:
            error = reply.get("error") if isinstance(reply, dict) else None
            self.app.log.warning("model_load_failed", model=model, reason=reason, status=status,
                                 error=error if isinstance(error, str) else f"HTTP {status}")
            return False
        self.app.metrics.keep_alive_refreshes.inc(model)
        self.app.log.debug("model_keep_alive", model=model, keepAlive=keep_alive, reason=reason)
        self.app.snapshot.poke()
        return True
