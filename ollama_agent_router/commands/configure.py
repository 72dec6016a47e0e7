"""``configure`` and ``init``: detect the host, merge an answers file and the user's answers, and write a
config that passes validation.

Generation is a pure function of the detection, the answers and the API key entries, so tests feed it
plain data. The wizard's I/O (questions, key generation, writing the file) stays in ``configure``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from ..config.parse import ConfigError, load_yaml, parse_config
from ..config.schema import PLANES
from ..config.yaml12 import yaml_dump, yaml_key_lines
from ..fsutil import atomic_write_text
from .detect import Detection, OllamaModel, detect

PACKAGE = "ollama_agent_router"  # data/ sits at the package's top, not beside this module

DEFAULT_OUTPUT = "./ollama-agent-router.yaml"
ROLES = ("fast", "code", "review", "heavy", "tool")
NO_MODELS = "No models detected or provided. Add at least one model to generate a config."
_ANSWER_SECTIONS = ("server", "ollama", "gpu", "router", "jobs", "queue", "access")  # overlays of the config
_ANSWER_KEYS = (*_ANSWER_SECTIONS, "models", "routes", "secure")
_PURPOSE = {
    "heavy": ["agentic_reasoning", "large_context", "planning", "tool_use"],
    "code": ["code_generate", "code_fix", "tool_use"],
    "review": ["code_review", "code_generate", "code_fix"],
    "tool": ["tool_use", "code_generate"],
    "fast": ["triage", "simple_chat", "summarize"],
}
# Each route takes the first non-empty list of its sequence (B.7); "fallback" always has something.
_ROUTE_SEQUENCES = {
    "triage": ("fast",), "simple_chat": ("fast",), "summarize": ("fast",),
    "code_generate": ("code",), "code_review": ("review", "code"), "code_fix": ("code", "review"),
    "agentic_reasoning": ("heavy", "code"), "large_context": ("heavy", "code"),
    "tool_use": ("tool", "code", "heavy"), "unknown": ("fast", "code"),
}


class ConfigureError(Exception):
    """Configuration cannot go on; the message is for the user."""


# --- Answers file -------------------------------------------------------------------------------------


def load_answers(path: str) -> tuple[dict[str, Any], list[str]]:
    """The answers file (B.8), checked loosely: (answers, warnings). Problems name the file, line and key."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"Cannot read answers file {path}: {e.strerror or e}") from None
    data = load_yaml(text, source=path)
    if data is None:
        return {}, []
    lines = yaml_key_lines(text)
    problems: list[str] = []

    def fail(where: tuple[Any, ...], problem: str) -> None:
        line = next((lines[where[:n]] for n in range(len(where), -1, -1) if where[:n] in lines), None)
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".") or "(top level)"
        problems.append(f"{path}:{line}: {dotted}: {problem}" if line else f"{path}: {dotted}: {problem}")

    if not isinstance(data, dict):
        fail((), "must be a mapping of sections")
        raise ConfigError(problems)
    warnings = [f"{path}: unknown section {key!r} ignored" for key in data if key not in _ANSWER_KEYS]
    answers = {key: value for key, value in data.items() if key in _ANSWER_KEYS}
    for key in _ANSWER_SECTIONS:
        if key in answers and not isinstance(answers[key], dict):
            fail((key,), "must be a mapping")
    for section, key, kinds in (("gpu", "monitor", dict), ("server", "https", (bool, dict))):
        value = answers.get(section)
        if isinstance(value, dict) and value.get(key) is not None and not isinstance(value[key], kinds):
            fail((section, key), "must be a mapping" if kinds is dict else "must be true, false or a mapping")
    if "secure" in answers and not isinstance(answers["secure"], bool):
        fail(("secure",), "must be true or false")
    _check_models(answers.get("models"), fail)
    routes = answers.get("routes")
    if routes is not None and not isinstance(routes, dict):
        fail(("routes",), "must be a mapping of task type to a list of model names")
    elif routes:
        for task, names in routes.items():
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                fail(("routes", task), "must be a list of model names")
    if problems:
        raise ConfigError(problems)
    return answers, warnings


def _check_models(models: Any, fail: Callable[[tuple[Any, ...], str], None]) -> None:
    if models is None:
        return
    if not isinstance(models, dict):
        fail(("models",), "must be a mapping with mode and items")
        return
    if models.get("mode") not in (None, "manual", "detected"):
        fail(("models", "mode"), "must be manual or detected")
    items = models.get("items")
    if items is not None and not isinstance(items, list):
        fail(("models", "items"), "must be a list of models")
        return
    for i, item in enumerate(items or []):
        where = ("models", "items", i)
        if not isinstance(item, dict):
            fail(where, "must be a mapping with at least a name")
            continue
        if not isinstance(item.get("name"), str) or not item["name"].strip():
            fail(where + ("name",), "is required")
        if item.get("role") is not None and item["role"] not in ROLES:
            fail(where + ("role",), f"unknown role {item['role']!r} (expected {', '.join(ROLES)})")


# --- Generation (pure) --------------------------------------------------------------------------------


def unified_memory_mb(ram_mb: int) -> int:
    """How much of an Apple Silicon Mac's memory the GPU may wire by default: about 2/3, 3/4 above 36 GB."""
    return ram_mb * 2 // 3 if ram_mb <= 36 * 1024 else ram_mb * 3 // 4


def gpu_section(det: Detection) -> dict[str, Any]:
    """The detected NVIDIA GPU, or this platform's default without one."""
    if det.gpu is not None:
        per_device = det.gpu.vram_total_mb / max(1, det.gpu.count)
        reserve = 1024 if per_device < 8192 else 1536 if per_device <= 24576 else 2048
        return {
            "provider": "nvidia", "name": det.gpu.name, "vramTotalMb": det.gpu.vram_total_mb,
            "vramSafetyReserveMb": reserve * max(1, det.gpu.count), "maxGpuUtilizationPct": 92,
            "requireGpuOnlyByDefault": True,
            "monitor": {"enabled": True, "intervalMs": 5000, "nvidiaSmiPath": det.gpu.smi_path or "nvidia-smi"},
        }
    if det.apple_silicon:
        # Unified memory: models run on the GPU out of system RAM, so there is VRAM to plan with.
        name, vram, reserve = "Apple Silicon / macOS GPU", unified_memory_mb(det.ram_mb), 2048
    else:
        name, vram, reserve = ("macOS GPU" if det.platform == "darwin" else "No NVIDIA GPU detected"), 0, 1024
    return {
        "provider": "none", "name": name, "vramTotalMb": vram, "vramSafetyReserveMb": reserve,
        "maxGpuUtilizationPct": 95, "requireGpuOnlyByDefault": False,
        "monitor": {"enabled": False, "intervalMs": 5000, "nvidiaSmiPath": "nvidia-smi"},
    }


def infer_role(name: str, size_gb: float, capabilities: tuple[str, ...] | None = None) -> str:
    """Size before name: a 32B "qwen" is a heavy model, not a code model. ``insert`` (fill-in-the-middle)
    marks a code model whatever its name."""
    n = name.lower()
    if "review" in n:
        return "review"
    if size_gb >= 12 or "gpt-oss" in n or "reason" in n:
        return "heavy"
    if "insert" in (capabilities or ()) or any(word in n for word in ("coder", "code", "devstral")):
        return "code"
    if "tool" in n:
        return "tool"
    return "fast"


def role_spec(role: str, cpu_only: bool) -> dict[str, Any]:
    heavy, middle = role == "heavy", role in ("code", "review", "tool")
    return {
        "purpose": list(_PURPOSE[role]),
        "priority": 95 if heavy else 70 if middle else 50,
        "maxConcurrent": 2 if role == "fast" and not cpu_only else 1,
        "defaultContext": 16384 if heavy else 8192 if middle else 4096,
        "maxContext": 65536 if heavy else 32768 if middle else 8192,
        "timeoutMs": 300000 if heavy else 180000 if middle else 90000,
        "costClass": "high" if heavy else "medium" if middle else "low",
        "exclusive": heavy,
        "allowWhenBusy": not heavy,
    }


def _detected_model(m: OllamaModel, cpu_only: bool) -> dict[str, Any]:
    model = {"name": m.name, "sizeGb": m.size_gb, **role_spec(infer_role(m.name, m.size_gb, m.capabilities), cpu_only)}
    if m.capabilities is not None and "tools" not in m.capabilities and "tool_use" in model["purpose"]:
        # Ollama answers 400 when tools are sent to a model without the capability.
        model["purpose"].remove("tool_use")
    if m.context_length:
        model["maxContext"] = min(model["maxContext"], m.context_length)
        model["defaultContext"] = min(model["defaultContext"], model["maxContext"])
    return model


def _answered_model(item: dict[str, Any], cpu_only: bool) -> dict[str, Any]:
    size = item.get("sizeGb", 2)
    role = item.get("role") or infer_role(item["name"], size if isinstance(size, (int, float)) else 2)
    model = {"name": item["name"], "sizeGb": size, **role_spec(role, cpu_only)}
    # Every field the answers give wins over the role's defaults.
    model.update({k: v for k, v in item.items() if k not in ("name", "sizeGb", "role")})
    return model


def _is_chat_model(m: OllamaModel) -> bool:
    return m.capabilities is None or "completion" in m.capabilities or "embedding" not in m.capabilities


def generate_models(det: Detection, answers: dict[str, Any], cpu_only: bool) -> list[dict[str, Any]]:
    spec = answers.get("models") or {}
    items = spec.get("items")
    if spec.get("mode") == "manual" or items is not None:
        return [_answered_model(item, cpu_only) for item in items or []]
    # Embedding-only models cannot answer chat requests, so no route may send one there.
    return [_detected_model(m, cpu_only) for m in det.models if _is_chat_model(m)]


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def generate_routes(models: list[dict[str, Any]], answered: dict[str, list[str]]) -> dict[str, list[str]]:
    def having(test: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [m["name"] for m in models if test(m)]

    def purpose(m: dict[str, Any]) -> list[Any]:
        return m["purpose"] if isinstance(m.get("purpose"), list) else []

    lists = {
        "fast": having(lambda m: m.get("costClass") == "low"),
        "code": having(lambda m: "code_generate" in purpose(m)),
        "review": having(lambda m: "code_review" in purpose(m)),
        "heavy": having(lambda m: m.get("exclusive") is True or m.get("costClass") == "high"),
        "tool": having(lambda m: "tool_use" in purpose(m)),
    }
    fallback = _unique(lists["fast"] + lists["code"] + [m["name"] for m in models])
    routes = {
        task: next((lists[name] for name in sequence if lists[name]), fallback)
        for task, sequence in _ROUTE_SEQUENCES.items()
    }
    routes.update({task: list(names) for task, names in answered.items()})
    return {task: names or [models[0]["name"]] for task, names in routes.items()}


def access_section(api_keys: list[dict[str, Any]]) -> dict[str, Any]:
    """Both planes open (the original's default), or, with keys, both requiring one: a plane left anonymous
    next to a locked one would still expose every job through the shared job routes."""
    locked = bool(api_keys)
    auth = {"requireApiKey": locked, "anonymous": "reject" if locked else "allow"}
    return {
        "bootstrapIfMissing": True,
        "admin": {
            "enabled": False, "allowedIps": ["127.0.0.1", "::1"], "trustedProxy": False, "apiKeyHashes": [],
            "clientCert": {"required": False, "allowedFingerprints": [], "allowedSubjects": []}, "auditLog": True,
        },
        "managed": {
            "version": 1,
            "planes": {plane: {"enabled": True, "auth": dict(auth)} for plane in PLANES},
            "apiKeys": list(api_keys),
        },
    }


def generate(det: Detection, answers: dict[str, Any], api_keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config as a mapping in the original's key order (B.7). ``api_keys`` hold hashes only."""
    detected_gpu, gpu_answers = gpu_section(det), answers.get("gpu") or {}
    gpu = {**detected_gpu, **gpu_answers, "monitor": {**detected_gpu["monitor"], **(gpu_answers.get("monitor") or {})}}
    cpu_only = gpu.get("provider") == "none" and not gpu.get("vramTotalMb")
    models = generate_models(det, answers, cpu_only)
    if not models:
        raise ConfigureError(NO_MODELS)
    small = cpu_only or det.machine_class == "small"
    exclusive = any(m.get("exclusive") is True for m in models)
    total_slots = sum(m["maxConcurrent"] for m in models if isinstance(m.get("maxConcurrent"), int))
    reserve = gpu.get("vramSafetyReserveMb") if isinstance(gpu.get("vramSafetyReserveMb"), (int, float)) else 1024
    classifier = next((m["name"] for m in models if m.get("costClass") == "low"), None)

    server_answers = dict(answers.get("server") or {})
    https = server_answers.pop("https", None)
    return {
        "server": {
            "nodeId": "local", "host": "127.0.0.1", "port": 11435, "basePath": "/", "requestBodyLimit": "8mb",
            "https": {"enabled": https} if isinstance(https, bool) else {"enabled": False, **(https or {})},
            **server_answers,
        },
        "access": {**access_section(api_keys or []), **(answers.get("access") or {})},
        "ollama": {
            "baseUrl": det.base_url, "openAiCompatiblePath": "/v1/chat/completions", "nativeApiBasePath": "/api",
            "keepAlive": "10m", "requestTimeoutMs": 180000, **(answers.get("ollama") or {}),
        },
        "gpu": gpu,
        "router": {
            "defaultMode": "auto",
            # Without a GPU a model answers slowly: hand work to async jobs early rather than queue it.
            "syncMaxQueueTimeMs": 100 if cpu_only else 250,
            "heavyLoadQueueDepth": 1 if cpu_only else 3 if exclusive else 4,
            "heavyLoadGpuFreeMbThreshold": max(2048, 2 * reserve) if gpu.get("provider") == "nvidia" else 1024,
            "defaultTaskType": "unknown",
            "classification": {
                "mode": "heuristic",
                **({"optionalClassifierModel": classifier} if classifier else {}),
                "classifierTimeoutMs": 1500,
            },
            **(answers.get("router") or {}),
        },
        "jobs": {
            "store": "memory", "resultTtlSeconds": 86400, "maxAttempts": 2, "cleanupIntervalMs": 60000,
            **(answers.get("jobs") or {}),
        },
        "models": models,
        "routes": generate_routes(models, answers.get("routes") or {}),
        "queue": {
            "globalMaxConcurrent": max(1, min(total_slots, 1 if small else 4 if det.machine_class == "large" else 3)),
            "globalMaxQueued": 50 if small else 100,
            "perUserMaxQueued": 10 if small else 20,
            "defaultPriority": "normal",
            "timeoutMs": 180000,
            **(answers.get("queue") or {}),
        },
    }


def to_yaml(config: dict[str, Any], now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# ollama-agent-router config, written by `ollama-agent-router configure` on {stamp}.\n"
              "# Check it with `ollama-agent-router validate-config -c <this file>`.\n")
    return header + yaml_dump(config)


def validate(text: str, output: str) -> None:
    """The generated text must pass the same validation ``serve`` applies (without reading other files)."""
    try:
        parse_config(load_yaml(text, source=output), source=output, text=text)
    except ConfigError as e:
        raise ConfigureError("The generated config is not valid:\n" + "\n".join(e.errors)) from None


# --- Rendering ----------------------------------------------------------------------------------------


def render_detection(det: Detection) -> str:
    gpu = gpu_section(det)
    if det.gpu is None:
        monitor = "disabled"
    else:
        monitor = "enabled through " + ("NVML" if det.gpu.source == "nvml" else det.gpu.smi_path or "nvidia-smi")
    binary_source = "command" if det.binary else "not_found"
    return "\n".join([
        "Detected environment",
        "",
        "Ollama:",
        f"  binary: {det.binary or 'not found'} ({binary_source}, {det.binary_confidence})",
        f"  base URL: {det.base_url} ({det.base_url_source})",
        f"  reachable: {'yes' if det.reachable else 'no'}",
        f"  models: {len(det.models)} found",
        "",
        "GPU:",
        f"  provider: {gpu['provider']}",
        f"  name: {gpu['name'] or 'not detected'}",
        f"  VRAM: {gpu['vramTotalMb']} MB",
        f"  monitor: {monitor}",
        "",
        "Machine:",
        f"  OS: {det.platform} {det.arch}",
        f"  CPU cores: {det.cpu_cores}",
        f"  RAM: {det.ram_mb} MB",
    ])


def render_summary(config: dict[str, Any], output: str, det: Detection) -> str:
    server, gpu, queue, jobs = config["server"], config["gpu"], config["queue"], config["jobs"]
    scheme = "https" if (server.get("https") or {}).get("enabled") else "http"
    heavy = next((m["name"] for m in config["models"] if m.get("exclusive") is True), "none")
    lines = [
        "",
        "Configuration summary",
        "",
        f"Output: {output}",
        f"Server: {scheme}://{server.get('host')}:{server.get('port')}{server.get('basePath')}",
        f"Ollama: {config['ollama'].get('baseUrl')}",
        f"GPU: {gpu.get('provider')}" + (f", {gpu['name']}" if gpu.get("name") else "")
        + f", {gpu.get('vramTotalMb')} MB VRAM",
        f"Models: {len(config['models'])} configured",
        f"Heavy model: {heavy}",
        f"Queue: global concurrency {queue.get('globalMaxConcurrent')}, max queued {queue.get('globalMaxQueued')}",
        f"Jobs: {jobs.get('store')} store, result TTL {jobs.get('resultTtlSeconds')}s",
    ]
    keys = config["access"].get("managed", {}).get("apiKeys") or []
    if keys:
        lines.append(f"Access: API key required on {', '.join(PLANES)} ({len(keys)} key{'s' * (len(keys) > 1)})")
    lines += ["", "Detected:", f"  Ollama models: {len(det.models)}", f"  Machine: {det.platform} {det.arch}", ""]
    return "\n".join(lines)


# --- The wizard ---------------------------------------------------------------------------------------


class Prompter:
    """Questions on stdin/stdout. A piped stdin works too, one answer a line."""

    def __init__(self, read: Callable[[str], str] = input) -> None:
        self._read = read

    def _line(self, prompt: str) -> str:
        try:
            return self._read(prompt).strip()
        except EOFError:
            raise ConfigureError(
                "No answer (input ended); use --non-interactive or -y to configure without questions") from None

    def confirm(self, question: str, default: bool) -> bool:
        answer = self._line(f"{question} {'[Y/n]' if default else '[y/N]'} ").lower()
        return default if not answer else answer in ("y", "yes")

    def ask(self, question: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
        while True:
            answer = self._line(f"{question} ({default}): ")
            if not answer:
                return default
            try:
                return parse(answer)
            except ValueError as e:
                print(f"  {e}")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a port is a number from 1 to 65535")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise ValueError("enter a whole number of megabytes")
    return int(text)


def _size_gb(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("the size is a number of gigabytes above 0")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("enter a URL such as http://127.0.0.1:11434")
    return text


def _corrections(p: Prompter, det: Detection, answers: dict[str, Any]) -> dict[str, Any]:
    """The original's correction questions; the answers overlay the answers file."""
    server = dict(answers.get("server") or {})
    ollama = dict(answers.get("ollama") or {})
    gpu = dict(answers.get("gpu") or {})
    ollama["baseUrl"] = p.ask("Ollama base URL", ollama.get("baseUrl", det.base_url), _url)
    server["host"] = p.ask("Server host", server.get("host", "127.0.0.1"))
    server["port"] = p.ask("Server port", server.get("port", 11435), _port)
    server["basePath"] = p.ask("Server base path", server.get("basePath", "/"))
    gpu["vramTotalMb"] = p.ask("GPU VRAM total MB", gpu.get("vramTotalMb", gpu_section(det)["vramTotalMb"]),
                               _non_negative)
    out = {**answers, "server": server, "ollama": ollama, "gpu": gpu}
    if not det.models and "models" not in answers:
        name = p.ask("First Ollama model name", "llama3.2:3b")
        size = p.ask("First model size GB", 2, _size_gb)
        out["models"] = {"mode": "manual", "items": [{"name": name, "sizeGb": size, "role": "fast"}]}
    return out


def _is_loopback(host: Any) -> bool:
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return str(host) == "localhost"


@dataclass(frozen=True)
class NewKey:
    id: str
    scopes: tuple[str, ...]
    key: str  # shown once, never written
    entry: dict[str, Any] = field(repr=False)  # what goes into the config: the hash, not the key


def new_keys(specs: list[tuple[str, str, tuple[str, ...]]]) -> list[NewKey]:
    """(id, name, scopes) -> fresh keys with their config entries."""
    from ..access.keys import generate_key

    out = []
    for key_id, name, scopes in specs:
        key, key_hash = generate_key()
        entry = {"id": key_id, "name": name, "keyHash": key_hash, "enabled": True, "scopes": list(scopes)}
        out.append(NewKey(key_id, scopes, key, entry))
    return out


LOCAL_KEY = ("local-client", "Local client", tuple(PLANES))
GATEWAY_KEY = ("gateway", "Gateway (Kong)", ("runtimeAgent",))


@dataclass(frozen=True)
class Options:
    output: str = DEFAULT_OUTPUT
    answers: str | None = None
    interactive: bool = True
    detect_only: bool = False
    dry_run: bool = False
    overwrite: bool = False
    secure: bool = False


def refuse_existing(path: str, overwrite: bool, shown: str) -> None:
    if os.path.exists(path) and not overwrite:
        raise ConfigureError(f"Refusing to overwrite existing config: {shown}")


def configure(opts: Options, *, prompter: Prompter | None = None,
              detector: Callable[[], Detection] = detect) -> int:
    if not (opts.detect_only or opts.dry_run):
        # Before any question: nobody should answer a wizard only to be told the file exists.
        refuse_existing(opts.output, opts.overwrite, opts.output)
    answers: dict[str, Any] = {}
    if opts.answers:
        answers, warnings = load_answers(opts.answers)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    det = detector()
    if opts.detect_only:
        print(render_detection(det))
        return 0
    specs = [LOCAL_KEY] if opts.secure or answers.get("secure") is True else []
    p = prompter or Prompter()
    if opts.interactive:
        print(render_detection(det) + "\n")
        if not p.confirm("Use these detected values?", True):
            answers = _corrections(p, det, answers)
        host = (answers.get("server") or {}).get("host", "127.0.0.1")
        if p.confirm("Require an API key on both planes (the key is generated and shown once)?",
                     bool(specs) or not _is_loopback(host)):
            specs = [LOCAL_KEY]
            if p.confirm("Also a separate key for a gateway such as Kong (runtimeAgent plane only)?", False):
                specs.append(GATEWAY_KEY)
        else:
            specs = []
    keys = new_keys(specs) if specs else []
    config = generate(det, answers, [k.entry for k in keys])
    text = to_yaml(config)
    validate(text, opts.output)
    print(render_summary(config, opts.output, det))
    if opts.dry_run:
        print(text, end="")
        _print_keys(keys)
        return 0
    if opts.interactive and not p.confirm("Write this config?", True):
        raise ConfigureError("Configuration cancelled")
    refuse_existing(opts.output, opts.overwrite, opts.output)
    atomic_write_text(opts.output, text, mode=0o644)
    print(f"Wrote {opts.output}")
    _print_keys(keys)
    return 0


def _print_keys(keys: list[NewKey]) -> None:
    for k in keys:
        print(f"\nAPI key {k.id} ({', '.join(k.scopes)}), shown only this once; the config holds its hash:\n  {k.key}")
    if keys:
        print("\nClients send it as 'Authorization: Bearer <key>'; the CLI takes --api-key or OAR_API_KEY.")


def init(output: str, *, wizard: bool) -> int:
    """``init``: the starter config (or, with ``--wizard``, the interactive ``configure``)."""
    if wizard:
        return configure(Options(output=output))
    refuse_existing(output, False, os.path.abspath(output))
    text = resources.files(PACKAGE).joinpath("data", "starter.yaml").read_text(encoding="utf-8")
    atomic_write_text(output, text, mode=0o644)
    print(f"Wrote {output}")
    return 0
