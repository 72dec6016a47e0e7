"""The runtime snapshot: GPU memory, loaded models and Ollama reachability, refreshed in the background.

Requests, status endpoints, metrics and Kong's runtime call all read this snapshot from memory; none
of them waits on NVML, nvidia-smi or Ollama. ``/api/ps`` polls carry a timeout because 2026 Ollama
servers block it while a model loads.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import datetime
from typing import Any, Callable, Sequence

from .config.schema import Config
from .events import EventHub, RuntimeEvent
from .gpu import GpuProbe, GpuSnapshot
from .log import Logger
from .routing import RoutingTable
from .upstream import OllamaClient, UpstreamError

_FRACTION = re.compile(r"(\.\d{6})\d+")


def processor_text(size: int, size_vram: int) -> str:
    """Render the CPU/GPU split like the ``ollama ps`` CLI does."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = math.floor((size - size_vram) / size * 100 + 0.5)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def size_text(n: int) -> str:
    """Decimal units as ``ollama ps`` prints them: 16 GB, 6.7 GB, 5 GB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def until_text(expires_at: str | None, now: float | None = None) -> str | None:
    if not expires_at:
        return None
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", expires_at.replace("Z", "+00:00"))).timestamp()
    except ValueError:
        return None
    delta = when - (time.time() if now is None else now)
    if delta < 0:
        return "Stopping..."
    if delta > 20 * 365 * 86400:
        return "Forever"
    s = int(delta)
    if s < 1:
        text = "Less than a second"
    elif s < 60:
        text = _plural(s, "second")
    elif s < 120:
        text = "About a minute"
    elif s < 3600:
        text = _plural(s // 60, "minute")
    elif s < 7200:
        text = "About an hour"
    elif s < 86400:
        text = _plural(s // 3600, "hour")
    else:
        text = _plural(s // 86400, "day")
    return f"{text} from now"


def loaded_model(entry: dict) -> dict | None:
    """One ``/api/ps`` entry as the original's LoadedModel shape (never a null value)."""
    name = entry.get("name") or entry.get("model")
    if not isinstance(name, str) or not name:
        return None
    out: dict[str, Any] = {"name": name}
    digest = entry.get("digest")
    if isinstance(digest, str) and digest:
        out["id"] = digest[:12]
    size = entry.get("size")
    size_vram = entry.get("size_vram")
    if isinstance(size, int):
        out["size"] = size_text(size)
        out["sizeBytes"] = size
    if isinstance(size, int) and isinstance(size_vram, int):
        out["processor"] = processor_text(size, size_vram)
        out["sizeVramBytes"] = size_vram
    until = until_text(entry.get("expires_at"))
    if until:
        out["until"] = until
    if isinstance(entry.get("context_length"), int) and entry["context_length"]:
        out["contextLength"] = entry["context_length"]
    return out


LoadedListener = Callable[[dict[str, str], "float | None"], None]


class Snapshot:
    """The background-refreshed view of the host. After every poll each of ``listeners`` (the scheduler,
    the model lifecycle) is told which configured models are loaded, with their processor text, and the
    free VRAM."""

    def __init__(self, cfg: Config, client: OllamaClient, gpu: GpuProbe, table: RoutingTable, log: Logger,
                 events: EventHub, listeners: Sequence[LoadedListener] = (), wake: asyncio.Event | None = None) -> None:
        self.cfg = cfg
        self.events = events
        self.client = client
        self.gpu = gpu
        self.table = table
        self.log = log
        self.listeners = tuple(listeners)
        self.loaded: dict[str, str] = {}  # configured model -> processor text (lower-cased)
        self.interval = max(0.05, cfg.ollama.poll_interval_ms / 1000)
        self.probe_timeout = min(1.0, max(0.2, self.interval))
        self.gpu_snapshot: GpuSnapshot | None = None
        self.loaded_models: list[dict] = []
        self.ollama_reachable = False
        self.refreshed_at = 0.0  # monotonic time of the last completed poll
        self._tags: tuple[float, int, Any] | None = None
        self._tags_inflight: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._wake = wake or asyncio.Event()  # set: poll now (others hold it too, to ask for a refresh)
        self._was_reachable: bool | None = None
        self._told: tuple | None = None  # what the live feed was last told

    # ---- reads (from memory) ----------------------------------------------------------------
    @property
    def gpu_free_mb(self) -> float | None:
        snap = self.gpu_snapshot
        return None if snap is None else snap.vram_free_mb

    @property
    def status(self) -> str:
        if not self.ollama_reachable:
            return "unavailable"
        g = self.cfg.gpu
        if g.monitor.enabled and g.provider != "none" and (self.gpu_snapshot is None or self.gpu.degraded):
            return "degraded"
        return "ok"

    def problems(self) -> list[str]:
        """What is wrong now, in words (empty when all is well): liveness stays up, readiness is in doubt."""
        out = []
        if not self.ollama_reachable:
            out.append(f"Ollama is unreachable at {self.client.display_url}")
        if self.status == "degraded":
            out.append(f"the GPU monitor ({self.cfg.gpu.provider}) has no reading: routing uses the configured VRAM")
        age = self.snapshot_age_ms()
        if age > max(10_000, 5 * self.interval * 1000):
            out.append(f"the runtime snapshot is {age // 1000} s old")
        return out

    def snapshot_age_ms(self) -> int:
        if not self.refreshed_at:
            return 0
        return int((time.monotonic() - self.refreshed_at) * 1000)

    def gpu_json(self) -> dict | None:
        snap = self.gpu_snapshot
        if snap is None:
            return None
        return {"provider": self.cfg.gpu.provider, **snap.to_json(time.monotonic())}

    # ---- refreshing ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        # Python 3.11's wait_for (the connect timeout) can swallow a cancellation that lands just as the
        # connection attempt fails (gh-86296): the poller then loops on. Ask until it has stopped.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
        self.gpu.close()

    def poke(self) -> None:
        """Ask for an early refresh (after a model was used or a request failed)."""
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A timer sets the event rather than wait_for(), whose cancellation races in Python 3.10/3.11.
            tick = loop.call_later(self.interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                tick.cancel()
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as e:  # the poller must outlive any one bad poll
                self.log.error("runtime_refresh_failed", error=f"{type(e).__name__}: {e}")

    async def refresh(self) -> None:
        gpu_task = asyncio.ensure_future(self.gpu.read())
        await self._poll_ps()
        try:
            self.gpu_snapshot = await gpu_task
        except Exception as e:
            self.log.error("gpu_read_failed", error=f"{type(e).__name__}: {e}")
            self.gpu_snapshot = None
        self.refreshed_at = time.monotonic()
        for listener in self.listeners:
            listener(self.loaded, self.gpu_free_mb)
        if self.events.subscribers:
            self._tell()

    def runtime_json(self) -> dict[str, Any]:
        """What the live feed shows of this snapshot: the GPU reading, the loaded models, Ollama's state."""
        body: dict[str, Any] = {"status": self.status, "ollamaReachable": self.ollama_reachable,
                                "loadedModels": self.loaded_models}
        gpu = self.gpu_json()
        if gpu is not None:
            body["gpu"] = gpu
        return body

    def _tell(self) -> None:
        """Publish the snapshot when it differs from the last one published (the reading's age aside)."""
        snap = self.gpu_snapshot
        devices = snap.devices if snap is not None else ()
        told = (self.ollama_reachable, self.status, snap.source if snap else None, devices,
                tuple((m["name"], m.get("sizeVramBytes"), m.get("processor")) for m in self.loaded_models))
        if told != self._told:
            self._told = told
            self.events.publish(RuntimeEvent(self.runtime_json()))

    async def _poll_ps(self) -> None:
        path = f"{self.cfg.ollama.native_api_base_path}/ps"
        try:
            status, data = await self.client.get_json(path, timeout=self.probe_timeout)
        except UpstreamError as e:
            if e.kind == "timeout":
                # A blocked /api/ps (a model is loading) says nothing about reachability: ask something cheap.
                reachable = await self._ping()
            else:
                reachable = False
            self._set_reachable(reachable, e.message)
            return
        models = data.get("models") if isinstance(data, dict) else None
        if status != 200 or not isinstance(models, list):
            self._set_reachable(status < 500, f"/api/ps answered HTTP {status}")
            return
        self._set_reachable(True, None)
        loaded = [m for m in (loaded_model(e) for e in models if isinstance(e, dict)) if m is not None]
        self.loaded_models = loaded
        mapping: dict[str, str] = {}
        for m in loaded:
            name = self.table.resolve(m["name"])
            if name is not None:
                mapping[name] = m.get("processor", "").lower()
        self.loaded = mapping

    async def _ping(self) -> bool:
        try:
            status, _ = await self.client.get_json(f"{self.cfg.ollama.native_api_base_path}/version",
                                                   timeout=self.probe_timeout)
            return status < 500
        except UpstreamError:
            return False

    def _set_reachable(self, reachable: bool, why: str | None) -> None:
        self.ollama_reachable = reachable
        if reachable != self._was_reachable:
            if reachable:
                self.log.info("ollama_reachable", baseUrl=self.client.display_url)
            else:
                self.log.warning("ollama_unreachable", baseUrl=self.client.display_url, reason=why or "unknown")
            self._was_reachable = reachable

    async def tags(self, max_age: float | None = None) -> tuple[int, Any]:
        """``/api/tags``, cached for about one poll interval; concurrent callers share one fetch."""
        max_age = self.interval if max_age is None else max_age
        now = time.monotonic()
        if self._tags is not None and now - self._tags[0] <= max_age:
            return self._tags[1], self._tags[2]
        if self._tags_inflight is not None:
            return await asyncio.shield(self._tags_inflight)
        fut = asyncio.get_running_loop().create_future()
        self._tags_inflight = fut
        try:
            status, data = await self.client.get_json(
                f"{self.cfg.ollama.native_api_base_path}/tags", timeout=self.cfg.ollama.connect_timeout_ms / 1000 + 2
            )
            self._tags = (time.monotonic(), status, data)
            fut.set_result((status, data))
            return status, data
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # mark retrieved: the waiters re-raise it themselves
            raise
        finally:
            self._tags_inflight = None
