import asyncio
import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from ollama_agent_router import gpu
from ollama_agent_router.config.schema import GpuConfig, GpuMonitorConfig
from ollama_agent_router.gpu import (
    GpuDevice,
    GpuProbe,
    GpuSnapshot,
    GpuUnavailable,
    NvmlBackend,
    parse_nvidia_smi_csv,
    run_nvidia_smi,
    static_snapshot,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-h200"
H200_UUID = "GPU-815b9d32-ebc4-c062-ff41-1eb379be8ef4"
REPORT = json.loads((FIXTURES / "nvml-report.json").read_text())
QUERY_GPU = (FIXTURES / "query-gpu.csv").read_text()
TWO_GPUS = (
    "0, NVIDIA H100 80GB HBM3, GPU-3c2e38d1-6a2c-4a31-b44b-9d82a8c80735, 81559, 6432, 74572, 37\n"
    "1, NVIDIA GeForce RTX 4090, GPU-5f0e7c59-1d2a-4b7e-9a43-0c8d6e2f1b9a, 24564, 1, 24077, 0\n"
)
DRIVER_GONE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def config(*, provider="nvidia", enabled=True, interval_ms=1000, name="RTX 4000 SFF Ada", smi="nvidia-smi"):
    return GpuConfig(
        vram_total_mb=20480,
        vram_safety_reserve_mb=1024,
        monitor=GpuMonitorConfig(interval_ms=interval_ms, enabled=enabled, nvidia_smi_path=smi),
        provider=provider,
        name=name,
    )


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Log:
    def __init__(self):
        self.events = []

    def __call__(self, event, fields):
        self.events.append((event, fields))

    def names(self):
        return [e for e, _ in self.events]


class SmiRunner:
    """Counts spawns; answers with a fixed (code, text), or raises `error`."""

    def __init__(self, code=0, out=QUERY_GPU, error=None):
        self.code, self.out, self.error = code, out, error
        self.argvs = []
        self.release = None  # an asyncio.Event that holds every run until set

    async def __call__(self, argv):
        self.argvs.append(argv)
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.code, self.out


async def until(condition, timeout=5.0):
    async def poll():
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


def walk_values(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk_values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_values(v)
    else:
        yield obj


# ---------------------------------------------------------------- nvidia-smi parser


def test_parse_real_idle_h200_free_is_not_total_minus_used():
    [d] = parse_nvidia_smi_csv(QUERY_GPU)
    assert d == GpuDevice(0, "NVIDIA H200", H200_UUID, 143771, 0, 143156, 0)
    assert d.free_mb != d.total_mb - d.used_mb


def test_parse_real_h200_during_allocation():
    [d] = parse_nvidia_smi_csv((FIXTURES / "query-gpu-during-20GiB-alloc.csv").read_text())
    assert (d.index, d.uuid, d.total_mb, d.used_mb, d.free_mb, d.util_pct) == (0, H200_UUID, 143771, 21007, 122150, 0)


def test_parse_header_and_units_form():
    [d] = parse_nvidia_smi_csv((FIXTURES / "query-gpu-with-header.csv").read_text())
    assert d == GpuDevice(0, "NVIDIA H200", None, 143771, 0, 143156, 0)


def test_parse_five_field_line_matches_original_example():
    [d] = parse_nvidia_smi_csv("RTX 4000 SFF Ada, 20480, 1024, 19456, 12\n")
    assert d == GpuDevice(0, "RTX 4000 SFF Ada", None, 20480, 1024, 19456, 12)
    body = GpuSnapshot("nvidia", "nvidia-smi", (d,), taken_at=5.0).to_json(now=5.0)
    assert {k: body[k] for k in ("provider", "name", "vramTotalMb", "vramUsedMb", "vramFreeMb", "utilizationPct")} == {
        "provider": "nvidia",
        "name": "RTX 4000 SFF Ada",
        "vramTotalMb": 20480,
        "vramUsedMb": 1024,
        "vramFreeMb": 19456,
        "utilizationPct": 12,
    }
    assert body["snapshotAgeMs"] == 0


def test_parse_unavailable_fields_become_none():
    text = (
        "0, NVIDIA A100-SXM4-40GB, GPU-aaaa, 40960, [N/A], [N/A], [N/A]\n"
        "1, NVIDIA A100-SXM4-40GB, [N/A], 40960, 100, 40000, [Not Supported]\n"
        "GRID T4-16Q, 16384, [Not Supported], 15000, [Not Supported]\n"
    )
    a, b, c = parse_nvidia_smi_csv(text)
    assert (a.used_mb, a.free_mb, a.util_pct, a.uuid) == (None, None, None, "GPU-aaaa")
    assert (b.used_mb, b.free_mb, b.util_pct, b.uuid) == (100, 40000, None, None)
    assert (c.index, c.name, c.total_mb, c.used_mb, c.free_mb, c.util_pct) == (2, "GRID T4-16Q", 16384, None, 15000, None)


def test_parse_multi_gpu_keeps_order_and_indices():
    devices = parse_nvidia_smi_csv(TWO_GPUS)
    assert [(d.index, d.name, d.total_mb, d.free_mb, d.util_pct) for d in devices] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, 74572, 37),
        (1, "NVIDIA GeForce RTX 4090", 24564, 24077, 0),
    ]


def test_parse_skips_garbage_rows():
    text = (
        DRIVER_GONE
        + "\n   \n"
        + ", 1000, 0, 1000, 0\n"  # empty name
        + "Tesla, lots, 0, 1000, 0\n"  # non-numeric total
        + "0, Tesla, GPU-x, [N/A], 0, 1, 0\n"  # unknown total
        + "x, Tesla, GPU-x, 1000, 0, 1000, 0\n"  # non-numeric index
        + "Tesla, 1000, 0\n"  # wrong field count
        + "Tesla T4, inf, 0, 1, 0\n"  # not finite
        + "Tesla T4, 15360, 0, 15000, 3\n"
    )
    [d] = parse_nvidia_smi_csv(text)
    assert (d.name, d.total_mb, d.util_pct) == ("Tesla T4", 15360, 3)
    assert parse_nvidia_smi_csv("") == []


# ---------------------------------------------------------------- snapshot shape


def test_snapshot_aggregates_several_devices():
    snap = GpuSnapshot("nvidia", "nvidia-smi", tuple(parse_nvidia_smi_csv(TWO_GPUS)), taken_at=0.0)
    assert snap.name == "NVIDIA H100 80GB HBM3, NVIDIA GeForce RTX 4090"
    assert (snap.vram_total_mb, snap.vram_used_mb, snap.vram_free_mb, snap.utilization_pct) == (
        81559 + 24564,
        6433,
        74572 + 24077,
        37,
    )
    same = GpuSnapshot("nvidia", "nvml", tuple(parse_nvidia_smi_csv(QUERY_GPU * 2)), taken_at=0.0)
    assert same.name == "2 x NVIDIA H200"


def test_to_json_omits_unknown_values_and_renders_integral_floats_as_ints():
    d = GpuDevice(0, "NVIDIA A100", None, 40960.0, None, None, None)
    body = GpuSnapshot("nvidia", "nvidia-smi", (d,), taken_at=10.0).to_json(now=10.0)
    assert None not in list(walk_values(body))
    assert "vramUsedMb" not in body and "vramFreeMb" not in body and "utilizationPct" not in body
    assert body["vramTotalMb"] == 40960 and isinstance(body["vramTotalMb"], int)
    assert body["devices"] == [{"index": 0, "name": "NVIDIA A100", "totalMb": 40960}]
    assert body["source"] == "nvidia-smi"


def test_snapshot_age_grows_with_now():
    snap = GpuSnapshot("nvidia", "static", (GpuDevice(0, "g", None, 1.0, 0.0, 1.0, 0.0),), taken_at=100.0)
    assert snap.to_json(now=100.0)["snapshotAgeMs"] == 0
    assert snap.to_json(now=100.25)["snapshotAgeMs"] == 250
    assert snap.to_json(now=103.0)["snapshotAgeMs"] == 3000
    assert snap.to_json()["snapshotAgeMs"] > 0  # time.monotonic() is far beyond 100 s


def test_static_snapshot():
    assert static_snapshot(config(provider="none")) is None
    snap = static_snapshot(config(name=None))
    assert (snap.source, snap.name, snap.vram_total_mb, snap.vram_used_mb, snap.vram_free_mb, snap.utilization_pct) == (
        "static",
        "Configured GPU",
        20480,
        0,
        20480,
        0,
    )
    assert static_snapshot(config()).name == "RTX 4000 SFF Ada"


# ---------------------------------------------------------------- NVML through a fake pynvml


class NVMLError(Exception):
    pass


def nvml_error(name):
    return type(name, (NVMLError,), {})


ERRORS = {
    n: nvml_error(n)
    for n in (
        "NVMLError_LibraryNotFound",
        "NVMLError_DriverNotLoaded",
        "NVMLError_NotSupported",
        "NVMLError_FunctionNotFound",
        "NVMLError_GpuIsLost",
    )
}


def fake_pynvml(names=("NVIDIA H200",)):
    """A pynvml lookalike that returns the numbers NVML gave on the real H200 (nvml-report.json)."""
    m = ModuleType("pynvml")
    m.calls = Counter()
    m.NVMLError = NVMLError
    for name, cls in ERRORS.items():
        setattr(m, name, cls)
    m.nvmlMemory_v2 = 0x02000028

    def count(call, result=None):
        def fn(*args, **kwargs):
            m.calls[call] += 1
            return result

        return fn

    m.nvmlInit = count("init")
    m.nvmlShutdown = count("shutdown")
    m.nvmlDeviceGetCount = lambda: len(names)
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    m.nvmlDeviceGetName = lambda h: names[h[1]]
    m.nvmlDeviceGetUUID = lambda h: REPORT["uuid"] if h[1] == 0 else f"GPU-{h[1]}"

    def memory(handle, version=None):
        m.calls["memory"] += 1
        if version is None:
            return SimpleNamespace(**REPORT["memory_v1"])
        assert version == m.nvmlMemory_v2
        return SimpleNamespace(version=version, **REPORT["memory_v2"])

    m.nvmlDeviceGetMemoryInfo = memory
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(**REPORT["utilization"])
    return m


@pytest.fixture
def nvml(monkeypatch):
    m = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", m)
    return m


def test_nvml_memory_v2_reports_reserved_separately(nvml):
    backend = NvmlBackend.open()
    [d] = backend.read_devices()
    assert (d.index, d.name, d.uuid) == (0, "NVIDIA H200", H200_UUID)
    assert d.total_mb == 143771
    assert d.used_mb == 0
    assert d.reserved_mb == pytest.approx(615.06, abs=0.01)
    assert d.free_mb == pytest.approx(143155.94, abs=0.01)
    assert d.util_pct == 0


def test_nvml_falls_back_to_v1_without_the_v2_symbol(nvml):
    v1 = nvml.nvmlDeviceGetMemoryInfo
    asked = []

    def old_driver(handle, version=None):
        asked.append(version)
        if version is not None:
            raise nvml.NVMLError_FunctionNotFound()
        return v1(handle)

    nvml.nvmlDeviceGetMemoryInfo = old_driver
    backend = NvmlBackend.open()
    for _ in range(2):
        [d] = backend.read_devices()
        assert d.used_mb == pytest.approx(615.06, abs=0.01)  # v1 folds the reservation into used
        assert d.reserved_mb is None
        assert d.free_mb == pytest.approx(143155.94, abs=0.01)
    assert asked == [nvml.nvmlMemory_v2, None, None]  # v2 is not asked again once v1 answered in its place


def test_nvml_falls_back_to_v1_on_old_bindings(nvml):
    v1 = nvml.nvmlDeviceGetMemoryInfo
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: v1(handle)  # no `version` parameter: TypeError
    [d] = NvmlBackend.open().read_devices()
    assert d.reserved_mb is None and d.total_mb == 143771
    del nvml.nvmlMemory_v2
    [d] = NvmlBackend.open().read_devices()
    assert d.reserved_mb is None and d.total_mb == 143771


def test_nvml_utilisation_not_supported_and_bytes_names(monkeypatch):
    m = fake_pynvml(names=(b"NVIDIA A100-SXM4-40GB MIG 1g.5gb", "NVIDIA H200"))

    def no_util(handle):
        raise m.NVMLError_NotSupported()

    m.nvmlDeviceGetUtilizationRates = no_util
    monkeypatch.setitem(sys.modules, "pynvml", m)
    a, b = NvmlBackend.open().read_devices()
    assert (a.index, a.name, a.uuid, a.util_pct) == (0, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", H200_UUID, None)
    assert (b.index, b.name, b.uuid, b.util_pct) == (1, "NVIDIA H200", "GPU-1", None)


@pytest.mark.parametrize(
    "error, words",
    [("NVMLError_LibraryNotFound", "no NVIDIA driver"), ("NVMLError_DriverNotLoaded", "driver is not loaded")],
)
def test_nvml_open_failures_raise_gpu_unavailable(nvml, error, words):
    def fail():
        raise getattr(nvml, error)()

    nvml.nvmlInit = fail
    with pytest.raises(GpuUnavailable, match=words):
        NvmlBackend.open()


def test_nvml_open_without_devices_shuts_down(nvml):
    nvml.nvmlDeviceGetCount = lambda: 0
    with pytest.raises(GpuUnavailable, match="no GPUs"):
        NvmlBackend.open()
    assert nvml.calls["shutdown"] == 1


def test_nvml_open_without_the_binding(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(GpuUnavailable, match="nvidia-ml-py is not installed"):
        NvmlBackend.open()


def test_nvml_open_silences_the_deprecated_pynvml_warning(monkeypatch, tmp_path):
    (tmp_path / "pynvml.py").write_text(
        "import warnings\n"
        "warnings.warn('The pynvml package is deprecated. Please install nvidia-ml-py instead.', FutureWarning)\n"
        "class NVMLError(Exception): pass\n"
        "def nvmlInit(): raise NVMLError('NVML Shared Library Not Found')\n"
    )
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        with pytest.raises(GpuUnavailable, match="Shared Library Not Found"):
            NvmlBackend.open()
        assert warnings.filters == filters  # silenced for the import only
    assert [str(w.message) for w in caught] == []
    assert sys.modules["pynvml"].__file__ == str(tmp_path / "pynvml.py")


def test_real_nvml_is_unavailable_on_a_machine_without_gpu():
    try:
        backend = NvmlBackend.open()
    except GpuUnavailable as e:
        assert str(e)
        return
    backend.close()
    pytest.skip("a real NVIDIA GPU is present")


def test_probe_reads_nvml_each_call_and_inits_once(nvml):
    clock = Clock()
    probe = GpuProbe(config(), smi_runner=SmiRunner(error=AssertionError("no spawn")), clock=clock)
    first = asyncio.run(probe.read())
    clock.t += 0.001
    second = asyncio.run(probe.read())
    assert (first.source, second.source) == ("nvml", "nvml")
    assert second.taken_at == clock.t
    assert nvml.calls["init"] == 1 and nvml.calls["memory"] == 2
    assert not probe.degraded
    probe.close()
    probe.close()
    assert nvml.calls["shutdown"] == 1


def test_probe_survives_a_lost_gpu_and_comes_back(nvml):
    clock, log = Clock(), Log()
    runner = SmiRunner(code=9, out=DRIVER_GONE)
    probe = GpuProbe(config(), smi_runner=runner, log=log, clock=clock)
    assert asyncio.run(probe.read()).source == "nvml"
    healthy = nvml.nvmlDeviceGetMemoryInfo

    def lost(handle, version=None):
        raise nvml.NVMLError_GpuIsLost()

    nvml.nvmlDeviceGetMemoryInfo = lost
    for _ in range(3):
        snap = asyncio.run(probe.read())
        assert snap.source == "static" and probe.degraded
        clock.t += 1
    assert nvml.calls["shutdown"] == 1  # a fresh nvmlInit is needed after a driver reset
    assert log.names() == ["gpu_probe_unavailable", "gpu_probe_unavailable"]
    assert [f["source"] for _, f in log.events] == ["nvml", "nvidia-smi"]
    assert "GPU 0" in log.events[0][1]["reason"]

    nvml.nvmlDeviceGetMemoryInfo = healthy
    clock.t += gpu.RETRY_S
    snap = asyncio.run(probe.read())
    assert snap.source == "nvml" and not probe.degraded
    assert nvml.calls["init"] == 2
    assert log.events[-1] == ("gpu_probe_recovered", {"source": "nvml"})


# ---------------------------------------------------------------- nvidia-smi fallback


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_probe_falls_back_to_one_cached_nvidia_smi_run(no_nvml):
    clock, log = Clock(), Log()
    runner = SmiRunner()
    probe = GpuProbe(config(interval_ms=2000, smi="/opt/nvidia/bin/nvidia-smi"), smi_runner=runner, log=log, clock=clock)

    async def scenario():
        runner.release = asyncio.Event()
        readers = [asyncio.ensure_future(probe.read()) for _ in range(5)]
        await until(lambda: runner.argvs)
        runner.release.set()
        return await asyncio.gather(*readers)

    snaps = asyncio.run(scenario())
    assert len(runner.argvs) == 1  # five concurrent readers shared one spawn
    assert runner.argvs[0] == ["/opt/nvidia/bin/nvidia-smi", gpu.SMI_QUERY, gpu.SMI_FORMAT]
    assert all(s is snaps[0] for s in snaps)
    assert snaps[0].source == "nvidia-smi" and snaps[0].vram_free_mb == 143156
    assert not probe.degraded
    assert [(e, f["source"]) for e, f in log.events] == [("gpu_probe_unavailable", "nvml")]

    clock.t += 1.999
    assert asyncio.run(probe.read()) is snaps[0]
    assert len(runner.argvs) == 1
    clock.t += 0.001
    assert asyncio.run(probe.read()).taken_at == clock.t
    assert len(runner.argvs) == 2
    assert len(log.events) == 1


def test_cancelled_reader_does_not_cancel_the_shared_spawn(no_nvml):
    runner = SmiRunner()
    probe = GpuProbe(config(), smi_runner=runner, clock=Clock())

    async def scenario():
        runner.release = asyncio.Event()
        impatient = asyncio.ensure_future(probe.read())
        patient = asyncio.ensure_future(probe.read())
        await until(lambda: runner.argvs)
        impatient.cancel()
        runner.release.set()
        return await patient

    assert asyncio.run(scenario()).source == "nvidia-smi"
    assert len(runner.argvs) == 1


@pytest.mark.parametrize(
    "runner",
    [
        SmiRunner(code=9, out=DRIVER_GONE),
        SmiRunner(error=FileNotFoundError(2, "No such file or directory")),
        SmiRunner(error=asyncio.TimeoutError()),
        SmiRunner(code=0, out="No devices were found\n"),
    ],
    ids=["exit-9", "missing", "timeout", "no-rows"],
)
def test_probe_uses_static_when_nothing_live_works_and_logs_once(no_nvml, runner):
    clock, log = Clock(), Log()
    probe = GpuProbe(config(), smi_runner=runner, log=log, clock=clock)
    for _ in range(5):
        snap = asyncio.run(probe.read())
        assert snap.source == "static" and snap.vram_free_mb == 20480
        assert probe.degraded
        clock.t += 1
    assert len(runner.argvs) == 1  # no spawn per call while it is known to fail
    assert [(e, f["source"]) for e, f in log.events] == [
        ("gpu_probe_unavailable", "nvml"),
        ("gpu_probe_unavailable", "nvidia-smi"),
    ]
    assert all(f["reason"] for _, f in log.events)

    clock.t += gpu.RETRY_S
    asyncio.run(probe.read())
    assert len(runner.argvs) == 2 and len(log.events) == 2  # retried, not logged again


def test_probe_recovers_when_nvidia_smi_starts_working(no_nvml):
    clock, log = Clock(), Log()
    runner = SmiRunner(code=9, out=DRIVER_GONE)
    probe = GpuProbe(config(), smi_runner=runner, log=log, clock=clock)
    assert asyncio.run(probe.read()).source == "static"
    runner.code, runner.out = 0, QUERY_GPU
    clock.t += gpu.RETRY_S
    assert asyncio.run(probe.read()).source == "nvidia-smi"
    assert not probe.degraded
    assert log.events[-1] == ("gpu_probe_recovered", {"source": "nvidia-smi"})


def test_probe_degrades_when_a_working_nvidia_smi_starts_failing(no_nvml):
    clock = Clock()
    runner = SmiRunner()
    probe = GpuProbe(config(interval_ms=1000), smi_runner=runner, clock=clock)
    assert asyncio.run(probe.read()).source == "nvidia-smi"
    runner.code, runner.out = 15, "GPU has fallen off the bus.\n"
    clock.t += 1
    assert asyncio.run(probe.read()).source == "static"
    assert probe.degraded


# ---------------------------------------------------------------- provider and monitor switches, injected backends


class FakeBackend:
    source = "simulated"

    def __init__(self):
        self.reads = 0
        self.error = None

    def read_devices(self):
        self.reads += 1
        if self.error:
            raise GpuUnavailable(self.error)
        return [GpuDevice(0, "Simulated GPU", "GPU-sim", 24576, 4096 + self.reads, 20000 - self.reads, 10)]


def test_provider_none_has_no_snapshot_and_touches_nothing(nvml):
    backend, runner = FakeBackend(), SmiRunner()
    probe = GpuProbe(config(provider="none"), backend=backend, smi_runner=runner)
    assert asyncio.run(probe.read()) is None
    assert (backend.reads, runner.argvs, nvml.calls["init"]) == (0, [], 0)
    assert not probe.degraded


def test_monitor_disabled_gives_the_static_snapshot(nvml):
    backend, runner = FakeBackend(), SmiRunner()
    probe = GpuProbe(config(enabled=False), backend=backend, smi_runner=runner)
    snap = asyncio.run(probe.read())
    assert snap.source == "static" and snap.name == "RTX 4000 SFF Ada"
    body = snap.to_json(now=snap.taken_at)
    assert body["snapshotAgeMs"] == 0 and body["vramUsedMb"] == 0 and body["vramFreeMb"] == 20480
    assert (backend.reads, runner.argvs, nvml.calls["init"]) == (0, [], 0)
    assert not probe.degraded


def test_injected_backend_is_read_every_call(nvml):
    backend = FakeBackend()
    probe = GpuProbe(config(), backend=backend, smi_runner=SmiRunner(error=AssertionError("no spawn")))
    a = asyncio.run(probe.read())
    b = asyncio.run(probe.read())
    assert (a.source, a.vram_used_mb, b.vram_used_mb) == ("simulated", 4097, 4098)
    assert nvml.calls["init"] == 0
    probe.close()
    assert asyncio.run(probe.read()).source == "simulated"  # close leaves a caller's backend alone


def test_injected_backend_failure_falls_back_then_recovers():
    clock, log = Clock(), Log()
    backend = FakeBackend()
    backend.error = "Driver Not Loaded"
    probe = GpuProbe(config(), backend=backend, smi_runner=SmiRunner(code=9, out=DRIVER_GONE), log=log, clock=clock)
    for _ in range(3):
        assert asyncio.run(probe.read()).source == "static"
        assert probe.degraded
    assert backend.reads == 3
    assert log.events[0] == ("gpu_probe_unavailable", {"source": "simulated", "reason": "Driver Not Loaded"})
    backend.error = None
    assert asyncio.run(probe.read()).source == "simulated"
    assert not probe.degraded
    assert log.events[-1] == ("gpu_probe_recovered", {"source": "simulated"})


def test_probe_json_never_contains_null():
    backend = FakeBackend()
    backend.read_devices = lambda: [GpuDevice(0, "MIG 1g.5gb", None, 4864, None, None, None)]
    snap = asyncio.run(GpuProbe(config(), backend=backend).read())
    body = snap.to_json()
    assert None not in list(walk_values(body))
    assert set(body) == {"provider", "name", "vramTotalMb", "snapshotAgeMs", "source", "devices"}


# ---------------------------------------------------------------- the real subprocess runner and import cost


def script(tmp_path, body):
    path = tmp_path / "fake-nvidia-smi"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_run_nvidia_smi_returns_status_and_output(tmp_path):
    smi = script(tmp_path, f'printf "%s" "{QUERY_GPU.strip()}"; echo warning >&2; exit 0\n')
    code, out = asyncio.run(run_nvidia_smi([smi, "--query-gpu=x"]))
    assert code == 0
    assert [d.name for d in parse_nvidia_smi_csv(out)] == ["NVIDIA H200"]
    assert "warning" in out
    smi9 = script(tmp_path, f'printf "{DRIVER_GONE.strip()}"; exit 9\n')
    assert asyncio.run(run_nvidia_smi([smi9])) == (9, DRIVER_GONE.strip())


def test_run_nvidia_smi_kills_a_hung_process(tmp_path):
    pid_file = tmp_path / "pid"
    smi = script(tmp_path, f"echo $$ > {pid_file}\nexec sleep 30\n")
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(run_nvidia_smi([smi], timeout_s=0.5))
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not left running


def test_probe_with_a_missing_nvidia_smi_binary(no_nvml, tmp_path):
    log = Log()
    probe = GpuProbe(config(smi=str(tmp_path / "absent" / "nvidia-smi")), log=log)
    assert asyncio.run(probe.read()).source == "static"
    assert probe.degraded
    assert "No such file" in log.events[-1][1]["reason"]


def test_importing_gpu_does_not_import_pynvml():
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import ollama_agent_router.gpu, sys; assert 'pynvml' not in sys.modules, 'pynvml imported'"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
