"""What ``configure`` finds on this host: the Ollama binary and server (models, their capabilities, what is
loaded), NVIDIA GPUs, CPU cores and memory.

Every probe is best-effort with a short timeout: a probe that fails reports "not found", never an error.
The probes are fields of ``Host``, so tests run them against a simulator or plain fakes.
"""

from __future__ import annotations

import ipaddress
import os
import platform as platform_module
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
HTTP_TIMEOUT_S = 1.5
SHOW_BUDGET_S = 5.0  # all /api/show calls together; a slow server gets name-based roles for the rest
RUN_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
_NODE_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "i386": "ia32", "i686": "ia32"}
_OLLAMA_PATHS = {
    "darwin": ("/opt/homebrew/bin/ollama", "/usr/local/bin/ollama", "/Applications/Ollama.app/Contents/Resources/ollama"),
    "other": ("/usr/bin/ollama", "/usr/local/bin/ollama", "/snap/bin/ollama"),
}


@dataclass(frozen=True)
class OllamaModel:
    name: str
    size_gb: float
    capabilities: tuple[str, ...] | None = None  # from /api/show; None when the server did not say
    context_length: int | None = None


@dataclass(frozen=True)
class Gpu:
    name: str  # "RTX 4000 SFF Ada", or "2 x NVIDIA H100" for several of one kind
    vram_total_mb: int  # all devices together: Ollama splits a model across them
    count: int
    source: str  # nvml | nvidia-smi
    smi_path: str | None = None


@dataclass(frozen=True)
class Detection:
    binary: str | None
    binary_confidence: str  # high (on PATH) | medium (a usual install place) | low (not found)
    base_url: str
    base_url_source: str  # env | default
    reachable: bool
    models: tuple[OllamaModel, ...]
    loaded: tuple[str, ...]
    gpu: Gpu | None  # None: no NVIDIA GPU found
    platform: str  # Node's names, as the original printed them: linux, darwin, win32
    arch: str  # x64, arm64
    cpu_cores: int
    ram_mb: int

    @property
    def apple_silicon(self) -> bool:
        return self.platform == "darwin" and self.arch == "arm64"

    @property
    def machine_class(self) -> str:
        if self.ram_mb < 16384 or self.cpu_cores < 4:
            return "small"
        if self.ram_mb > 65536 or self.cpu_cores > 16:
            return "large"
        return "medium"


# --- The host's probes --------------------------------------------------------------------------------


def _http_json(method: str, url: str, body: Any, timeout: float) -> tuple[int, Any]:
    import json

    from .client import fetch

    status, raw = fetch(method, url, body=body, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return done.returncode, done.stdout


def _nvml_devices() -> list[Any]:
    from ..gpu import NvmlBackend

    backend = NvmlBackend.open()
    try:
        return backend.read_devices()
    finally:
        backend.close()


def _ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // _MIB
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 0


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@dataclass(frozen=True)
class Host:
    """The outside world as detection sees it. Tests replace any field."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    platform: str = sys.platform
    machine: str = field(default_factory=platform_module.machine)
    cpu_count: Callable[[], int | None] = os.cpu_count
    ram_mb: Callable[[], int] = _ram_mb
    is_executable: Callable[[str], bool] = _is_executable
    http_json: Callable[[str, str, Any, float], tuple[int, Any]] = _http_json
    run: Callable[[list[str], float], tuple[int, str]] = _run
    nvml_devices: Callable[[], list[Any]] = _nvml_devices
    clock: Callable[[], float] = time.monotonic


# --- Detection ----------------------------------------------------------------------------------------


def detect(host: Host | None = None) -> Detection:
    host = host or Host()
    binary, confidence = find_ollama_binary(host)
    raw_host = host.env.get("OLLAMA_HOST", "").strip()
    base_url = ollama_base_url(raw_host)
    reachable, models, loaded = _probe_ollama(host, base_url)
    return Detection(
        binary=binary,
        binary_confidence=confidence,
        base_url=base_url,
        base_url_source="env" if raw_host else "default",
        reachable=reachable,
        models=models,
        loaded=loaded,
        gpu=None if host.platform == "darwin" else _probe_gpu(host),
        platform=host.platform,
        arch=_NODE_ARCH.get(host.machine.lower(), host.machine.lower()),
        cpu_cores=host.cpu_count() or 1,
        ram_mb=host.ram_mb(),
    )


def _which(host: Host, name: str) -> str | None:
    for directory in host.env.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, name)
        if directory and host.is_executable(candidate):
            return candidate
    return None


def find_ollama_binary(host: Host) -> tuple[str | None, str]:
    found = _which(host, "ollama")
    if found:
        return found, "high"
    for candidate in _OLLAMA_PATHS["darwin" if host.platform == "darwin" else "other"]:
        if host.is_executable(candidate):
            return candidate, "medium"
    return None, "low"


def ollama_base_url(value: str | None) -> str:
    """``OLLAMA_HOST`` read the way Ollama reads it: scheme default http; without a scheme the port defaults
    to 11434, with one to the scheme's port; host default 127.0.0.1. A bind-all address (``0.0.0.0``,
    ``::``) is where the server listens, not where to call it, so it becomes loopback."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_OLLAMA_URL
    scheme, sep, rest = text.partition("://")
    default_port = "11434"
    if not sep:
        scheme, rest = "http", text
    elif scheme in ("http", "https"):
        default_port = "80" if scheme == "http" else "443"
    hostport, _, path = rest.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port = hostport.strip("[]") or "127.0.0.1", default_port
    else:
        host, port = split
    if not (port.isdigit() and int(port) <= 65535):
        port = default_port
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if not host or (ip is not None and ip.is_unspecified):
        host = "127.0.0.1" if ip is None or ip.version == 4 else "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}" + (f"/{path}" if path else "")


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: None when there is no port part (or the brackets are broken)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return None
        return text[1:end], text[end + 2 :]
    if text.count(":") != 1:
        return None
    host, port = text.split(":")
    return host, port


def _probe_ollama(host: Host, base_url: str) -> tuple[bool, tuple[OllamaModel, ...], tuple[str, ...]]:
    api = base_url.rstrip("/") + "/api"
    tags = _json_or_none(host, "GET", f"{api}/tags")
    if not isinstance(tags, dict):
        return False, (), ()
    entries = [m for m in tags.get("models") or [] if isinstance(m, dict) and isinstance(m.get("name"), str)]
    deadline = host.clock() + SHOW_BUDGET_S
    models = []
    show_works = True
    for entry in entries:
        show = None
        if show_works and host.clock() < deadline:
            show = _json_or_none(host, "POST", f"{api}/show", {"model": entry["name"]})
            # An old server (or one that errors) will not answer the next one either.
            show_works = isinstance(show, dict)
        models.append(_model(entry, show if isinstance(show, dict) else {}))
    ps = _json_or_none(host, "GET", f"{api}/ps")
    running = ps.get("models") if isinstance(ps, dict) else None
    loaded = tuple(m["name"] for m in running or [] if isinstance(m, dict) and isinstance(m.get("name"), str))
    return True, tuple(models), loaded


def _json_or_none(host: Host, method: str, url: str, body: Any = None) -> Any:
    try:
        status, data = host.http_json(method, url, body, HTTP_TIMEOUT_S)
    except Exception:  # best-effort: whatever goes wrong, this probe found nothing
        return None
    return data if status == 200 else None


def _model(entry: dict, show: dict) -> OllamaModel:
    size = entry.get("size")
    capabilities = show.get("capabilities")
    context = None
    for key, value in (show.get("model_info") or {}).items():
        if key.endswith(".context_length") and isinstance(value, int) and value > 0:
            context = value
    # Ollama prints sizes in decimal gigabytes.
    size_gb = round(size / 1e9, 1) if isinstance(size, (int, float)) and size > 0 else 2.0
    return OllamaModel(
        name=entry["name"],
        size_gb=int(size_gb) if size_gb.is_integer() else size_gb,
        capabilities=tuple(c for c in capabilities if isinstance(c, str)) if isinstance(capabilities, list) else None,
        context_length=context,
    )


def _probe_gpu(host: Host) -> Gpu | None:
    from ..gpu import SMI_FORMAT, SMI_QUERY, parse_nvidia_smi_csv

    try:
        devices, source, smi = host.nvml_devices(), "nvml", _which(host, "nvidia-smi")
    except Exception:  # no driver, no binding, no device: try the command line tool
        devices, source, smi = [], "nvidia-smi", _which(host, "nvidia-smi")
        if smi is not None:
            try:
                code, out = host.run([smi, SMI_QUERY, SMI_FORMAT], RUN_TIMEOUT_S)
                devices = parse_nvidia_smi_csv(out) if code == 0 else []
            except (OSError, subprocess.SubprocessError):
                devices = []
    if not devices:
        return None
    names = [d.name for d in devices]
    name = f"{len(names)} x {names[0]}" if len(names) > 1 and len(set(names)) == 1 else ", ".join(names)
    return Gpu(name=name, vram_total_mb=round(sum(d.total_mb for d in devices)), count=len(devices),
               source=source, smi_path=smi)
