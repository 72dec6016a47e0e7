"""Which models stay resident in VRAM: keep-alive refreshes, pinned and prewarmed models, deferred loads.

Ollama's OpenAI layer ignores ``keep_alive``: after every ``/v1`` request a model gets the server's
default keep-alive (the last request's value wins). So when a model goes idle the router sends it one
load-only native request, ``/api/generate`` with no prompt and ``keep_alive`` set to ``ollama.keepAlive``
(``-1`` for a pinned model), a short moment later so that a burst of requests costs one refresh. The
refresh goes only to a model that is still loaded: it must never bring back a model Ollama has unloaded.

Pinned and prewarmed models are loaded at start-up; a pinned model that has gone (evicted, Ollama
restarted) is loaded again by a check every ``PIN_CHECK_S``. Everything runs on loop timers: one per
model that has just gone idle, one for the pinned models; no task polls.

This is the scheduler's ``Effects``: the scheduler tells it when a model goes busy or idle and when a
load was held back; it never asks the scheduler anything. What is loaded comes from the runtime snapshot
(``set_loaded``); after a load it asks for an early poll through an event the snapshot waits on.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Callable, Coroutine, Sequence

from .config.schema import Config
from .log import Logger
from .metrics import Metrics
from .upstream import OllamaClient, UpstreamError

REFRESH_DELAY_S = 5.0  # idle this long before the refresh: a burst of requests is one refresh
PIN_CHECK_S = 30.0


def keep_alive_value(text: str) -> int | str:
    """Ollama takes a duration string or a number of seconds; a bare integer is sent as a number."""
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


class Residency:
    def __init__(self, cfg: Config, client: OllamaClient, metrics: Metrics, log: Logger,
                 refresh_snapshot: Callable[[], None] = lambda: None) -> None:
        self.cfg = cfg
        self.refresh_snapshot = refresh_snapshot  # after a load: the scheduler should learn of it soon
        self.client = client
        self.metrics = metrics
        self.log = log
        self.keep_alive = keep_alive_value(cfg.ollama.keep_alive)
        self.refresh_delay = REFRESH_DELAY_S
        self.pin_interval = PIN_CHECK_S
        self._pinned = frozenset(m.name for m in cfg.models if m.pinned)
        self._loaded: frozenset[str] = frozenset()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pin_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loading: set[str] = set()
        self.last_used: dict[str, float] = {}  # model -> wall clock time it last went idle

    @property
    def pending_refreshes(self) -> list[str]:
        """Models whose keep-alive refresh timer is running."""
        return list(self._timers)

    def keep_alive_for(self, model: str) -> int | str:
        return -1 if model in self._pinned else self.keep_alive

    def set_loaded(self, loaded: dict[str, str], free_mb: float | None) -> None:
        """The configured models Ollama has loaded now (from the runtime snapshot)."""
        self._loaded = frozenset(loaded)

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
    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    def load_deferred(self, model: str) -> None:
        self.metrics.loads_avoided.inc(model)
        self.log.debug("model_load_deferred", model=model)

    def model_busy(self, model: str) -> None:
        timer = self._timers.pop(model, None)
        if timer is not None:
            timer.cancel()  # in use again: its next idle moment refreshes it

    def model_idle(self, model: str) -> None:
        self.last_used[model] = time.time()
        self.model_busy(model)
        self._timers[model] = asyncio.get_running_loop().call_later(self.refresh_delay, self._refresh, model)

    # ---- refreshing ---------------------------------------------------------------------------------
    def _refresh(self, model: str) -> None:
        del self._timers[model]
        if model in self._loaded:  # a model Ollama has unloaded must not come back
            self._spawn(self._load(model, "keep_alive"))

    def _arm_pin_check(self) -> None:
        self._pin_timer = asyncio.get_running_loop().call_later(self.pin_interval, self._pin_tick)

    def _pin_tick(self) -> None:
        self._arm_pin_check()
        self.check_pinned()

    def check_pinned(self) -> None:
        """Load again every pinned model that Ollama no longer has loaded."""
        for name in self._pinned - self._loaded:
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
        try:
            if not await self._generate(model, keep_alive, "model_load_failed", reason):
                return False
        finally:
            self._loading.discard(model)
        self._loaded |= {model}  # it is loaded now; the snapshot poll it asks for tells everyone else
        self.refresh_snapshot()
        self.metrics.keep_alive_refreshes.inc(model)
        self.log.debug("model_keep_alive", model=model, keepAlive=keep_alive, reason=reason)
        return True

    async def unload(self, models: Sequence[str]) -> None:
        """Unload idle models now, to make room for a load the scheduler chose them for (steered evictions).
        Their keep-alive refreshes are called off first: a refresh must not load a victim back."""
        for model in models:
            self.model_busy(model)  # cancels its refresh timer
        self._loaded -= set(models)
        await asyncio.gather(*(self._generate(m, 0, "model_unload_failed", "make_room") for m in models))
        self.refresh_snapshot()
        self.log.debug("models_unloaded_for_room", models=list(models))

    async def _generate(self, model: str, keep_alive: int | str, failed: str, reason: str) -> bool:
        """One empty ``/api/generate``: it loads the model and sets its keep-alive (0: unloads it)."""
        body = {"model": model, "keep_alive": keep_alive, "stream": False}
        try:
            status, reply = await self.client.post_json(
                f"{self.cfg.ollama.native_api_base_path}/generate", body,
                timeout=self.cfg.ollama.request_timeout_ms / 1000)
        except UpstreamError as e:
            self.log.warning(failed, model=model, reason=reason, error=e.message)
            return False
        if status >= 400:
            error = reply.get("error") if isinstance(reply, dict) else None
            self.log.warning(failed, model=model, reason=reason, status=status,
                             error=error if isinstance(error, str) else f"HTTP {status}")
            return False
        return True
