"""GPU memory and utilisation: NVML first, one cached nvidia-smi run as fallback, the configured numbers last.

NVML reads take microseconds, so they run inline on the event loop. nvidia-smi costs tens of milliseconds and a
process, so it runs at most once per ``monitor.interval_ms`` and concurrent callers share the run in flight.
``pynvml`` is imported only when NVML is first tried, keeping it out of CLI start-up.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Awaitable, Callable, Protocol

from .config.schema import GpuConfig

_MIB = 1024 * 1024
SMI_TIMEOUT_S = 2.0
# How long a failed live source is left alone before it is tried again.
RETRY_S = 60.0
SMI_QUERY = "--query-gpu=index,name,uuid,memory.total,memory.used,memory.free,utilization.gpu"
SMI_FORMAT = "--format=csv,noheader,nounits"

LogFn = Callable[[str, dict], None]
SmiRunner = Callable[[list[str]], Awaitable[tuple[int, str]]]


class GpuUnavailable(Exception):
    """A live GPU source cannot be used; the message says why."""


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    uuid: str | None
    total_mb: float
    used_mb: float | None
    free_mb: float | None  # not total - used: the driver reserves memory that counts as neither
    util_pct: float | None
    reserved_mb: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_none(
            {
                "index": self.index,
                "name": self.name,
                "uuid": self.uuid,
                "totalMb": self.total_mb,
                "usedMb": self.used_mb,
                "freeMb": self.free_mb,
                "reservedMb": self.reserved_mb,
                "utilizationPct": self.util_pct,
            }
        )


@dataclass(frozen=True)
class GpuSnapshot:
    provider: str
    source: str  # nvml | nvidia-smi | static | simulated
    devices: tuple[GpuDevice, ...]
    taken_at: float  # time.monotonic() when read

    @property
    def name(self) -> str:
        names = [d.name for d in self.devices]
        if len(set(names)) == 1 and len(names) > 1:
            return f"{len(names)} x {names[0]}"
        return ", ".join(names)

    @property
    def vram_total_mb(self) -> float:
        return sum(d.total_mb for d in self.devices)

    @property
    def vram_used_mb(self) -> float | None:
        return _sum_known(d.used_mb for d in self.devices)

    @property
    def vram_free_mb(self) -> float | None:
        return _sum_known(d.free_mb for d in self.devices)

    @property
    def utilization_pct(self) -> float | None:
        known = [d.util_pct for d in self.devices if d.util_pct is not None]
        return max(known) if known else None

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        if now is None:
            now = time.monotonic()
        return _without_none(
            {
                "provider": self.provider,
                "name": self.name,
                "vramTotalMb": self.vram_total_mb,
                "vramUsedMb": self.vram_used_mb,
                "vramFreeMb": self.vram_free_mb,
                "utilizationPct": self.utilization_pct,
                "snapshotAgeMs": max(0, int((now - self.taken_at) * 1000)),
                "source": self.source,
                "devices": [d.to_json() for d in self.devices],
            }
        )


def _sum_known(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _json_number(value: Any) -> Any:
    # JS renders 14.0 as 14; the original's clients expect that, and MiB from bytes need no more than 2 decimals.
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 2)
    return value


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: _json_number(v) for k, v in fields.items() if v is not None}


class GpuBackend(Protocol):
    """Reads every device (at least one) synchronously and fast; raises GpuUnavailable when it cannot."""

    source: str

    def read_devices(self) -> list[GpuDevice]: ...


def _smi_number(field: str) -> float | None:
    text = field.strip()
    for unit in (" MiB", " %"):
        if text.endswith(unit):
            text = text[: -len(unit)]
    try:
        value = float(text)
    except ValueError:  # bracketed placeholders such as [N/A], header cells, garbage
        return None
    return value if math.isfinite(value) else None


def _smi_text(field: str) -> str | None:
    text = field.strip()
    return None if not text or text.startswith("[") else text


def parse_nvidia_smi_csv(text: str) -> list[GpuDevice]:
    """Parse `nvidia-smi --query-gpu` CSV in the 5-field (name first) or 7-field (index, name, uuid first) order,
    with or without header and units. Rows that are not GPUs (headers, error messages) are skipped."""
    devices: list[GpuDevice] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 7:
            index_text, name, uuid_text, *numbers = fields
            if not index_text.isdigit():
                continue
            index, uuid = int(index_text), _smi_text(uuid_text)
        elif len(fields) == 5:
            name, *numbers = fields
            index, uuid = len(devices), None
        else:
            continue
        total, used, free, util = (_smi_number(n) for n in numbers)
        if not name or total is None:
            continue
        devices.append(GpuDevice(index, name, uuid, total, used, free, util))
    return devices


def static_snapshot(cfg: GpuConfig) -> GpuSnapshot | None:
    """The configured GPU with all of its memory free, as the original reported without a monitor."""
    if cfg.provider != "nvidia":
        return None
    device = GpuDevice(
        index=0,
        name=cfg.name or "Configured GPU",
        uuid=None,
        total_mb=cfg.vram_total_mb,
        used_mb=0,
        free_mb=cfg.vram_total_mb,
        util_pct=0,
    )
    return GpuSnapshot("nvidia", "static", (device,), time.monotonic())


_NVML_HINTS = {
    "NVMLError_LibraryNotFound": "no NVIDIA driver installed (libnvidia-ml.so.1 not found)",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
}


def _import_pynvml() -> ModuleType:
    # The deprecated `pynvml` distribution warns on import even though the module is nvidia-ml-py's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)
        import pynvml
    return pynvml


def _text(value: str | bytes) -> str:
    # Old bindings return bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class NvmlBackend:
    """Every NVIDIA device through NVML. Names and UUIDs are read once at open; memory and load on each read."""

    source = "nvml"

    def __init__(self, nvml: ModuleType, devices: list[tuple[Any, str, str | None]]):
        self._nvml = nvml
        self._devices = devices  # (handle, name, uuid)
        self._v2 = hasattr(nvml, "nvmlMemory_v2")
        self._open = True

    @classmethod
    def open(cls) -> NvmlBackend:
        try:
            nvml = _import_pynvml()
        except ImportError as e:
            raise GpuUnavailable(f"nvidia-ml-py is not installed ({e})") from e
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            hint = _NVML_HINTS.get(type(e).__name__)
            raise GpuUnavailable(f"nvmlInit failed: {e}" + (f": {hint}" if hint else "")) from e
        try:
            devices = []
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle)) or None
                devices.append((handle, _text(nvml.nvmlDeviceGetName(handle)), uuid))
        except nvml.NVMLError as e:
            nvml.nvmlShutdown()
            raise GpuUnavailable(f"NVML could not list devices: {e}") from e
        if not devices:
            nvml.nvmlShutdown()
            raise GpuUnavailable("NVML found no GPUs")
        return cls(nvml, devices)

    def _memory(self, handle: Any) -> tuple[Any, float | None]:
        nvml = self._nvml
        if self._v2:
            try:
                info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
                return info, info.reserved / _MIB
            except (nvml.NVMLError, TypeError):
                # Old driver (no _v2 symbol) or old binding (no `version`): if v1 works, v2 never will.
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                self._v2 = False
                return info, None
        return nvml.nvmlDeviceGetMemoryInfo(handle), None

    def _utilization(self, handle: Any) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except self._nvml.NVMLError_NotSupported:  # MIG and some vGPU setups
            return None

    def read_devices(self) -> list[GpuDevice]:
        out = []
        for index, (handle, name, uuid) in enumerate(self._devices):
            try:
                info, reserved = self._memory(handle)
                util = self._utilization(handle)
            except self._nvml.NVMLError as e:
                raise GpuUnavailable(f"NVML read of GPU {index} failed: {e}") from e
            out.append(GpuDevice(index, name, uuid, info.total / _MIB, info.used / _MIB, info.free / _MIB, util, reserved))
        return out

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # shutting down a lost GPU can fail too; there is nothing left to release


async def run_nvidia_smi(argv: list[str], timeout_s: float = SMI_TIMEOUT_S) -> tuple[int, str]:
    """Run nvidia-smi, killing it past ``timeout_s``. Its error text goes to stdout, so stderr is merged in."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return await proc.wait(), out.decode("utf-8", "replace")


class GpuProbe:
    """One GPU snapshot per call to ``read``, from the best source that works now."""

    def __init__(
        self,
        cfg: GpuConfig,
        *,
        backend: GpuBackend | None = None,
        log: LogFn | None = None,
        smi_runner: SmiRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._cfg = cfg
        self._injected = backend
        self._backend: GpuBackend | None = backend
        self._log = log
        self._smi_runner = smi_runner or run_nvidia_smi
        self._clock = clock
        self._nvml_retry_at = 0.0
        self._smi_retry_at = 0.0
        self._smi_cached: GpuSnapshot | None = None
        self._smi_task: asyncio.Future[GpuSnapshot | None] | None = None
        self._down: set[str] = set()  # sources whose failure was logged and that have not recovered since
        self._degraded = False

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def read(self) -> GpuSnapshot | None:
        cfg = self._cfg
        if cfg.provider != "nvidia":
            return None
        if not cfg.monitor.enabled:
            return static_snapshot(cfg)
        snapshot = self._read_backend() or await self._read_smi()
        self._degraded = snapshot is None
        return snapshot or static_snapshot(cfg)

    def close(self) -> None:
        if isinstance(self._backend, NvmlBackend):
            self._backend.close()
        self._backend = self._injected

    def _report_down(self, source: str, reason: str) -> None:
        if source not in self._down:
            self._down.add(source)
            self._emit("gpu_probe_unavailable", {"source": source, "reason": reason})

    def _report_up(self, source: str) -> None:
        if source in self._down:
            self._down.discard(source)
            self._emit("gpu_probe_recovered", {"source": source})

    def _emit(self, event: str, fields: dict) -> None:
        if self._log is not None:
            self._log(event, fields)

    def _read_backend(self) -> GpuSnapshot | None:
        now = self._clock()
        if self._backend is None:
            if now < self._nvml_retry_at:
                return None
            try:
                self._backend = NvmlBackend.open()
            except GpuUnavailable as e:
                self._nvml_retry_at = now + RETRY_S
                self._report_down("nvml", str(e))
                return None
        backend = self._backend
        try:
            devices = backend.read_devices()
        except GpuUnavailable as e:
            self._report_down(backend.source, str(e))
            if backend is not self._injected:
                # A lost GPU can come back after a driver reset, which needs a fresh nvmlInit.
                self.close()
                self._nvml_retry_at = now + RETRY_S
            return None
        self._report_up(backend.source)
        return GpuSnapshot("nvidia", backend.source, tuple(devices), now)

    async def _read_smi(self) -> GpuSnapshot | None:
        now = self._clock()
        cached = self._smi_cached
        if cached is not None and (now - cached.taken_at) * 1000 < self._cfg.monitor.interval_ms:
            return cached
        if now < self._smi_retry_at:
            return None
        if self._smi_task is None:
            self._smi_task = asyncio.ensure_future(self._spawn_smi())
        # Shielded: one caller giving up must not kill the run the others wait on.
        return await asyncio.shield(self._smi_task)

    async def _spawn_smi(self) -> GpuSnapshot | None:
        try:
            devices, reason = await self._smi_devices()
        finally:
            self._smi_task = None
        now = self._clock()
        if not devices:
            self._smi_retry_at = now + RETRY_S
            self._report_down("nvidia-smi", reason)
            return None
        self._report_up("nvidia-smi")
        self._smi_cached = GpuSnapshot("nvidia", "nvidia-smi", tuple(devices), now)
        return self._smi_cached

    async def _smi_devices(self) -> tuple[list[GpuDevice], str]:
        argv = [self._cfg.monitor.nvidia_smi_path, SMI_QUERY, SMI_FORMAT]
        try:
            code, out = await self._smi_runner(argv)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            return [], f"could not run {argv[0]}: {str(e) or type(e).__name__}"
        if code != 0:
            return [], f"nvidia-smi exited with status {code}: {out.strip()[:200]}"
        devices = parse_nvidia_smi_csv(out)
        return devices, "" if devices else "nvidia-smi printed no GPU rows"
