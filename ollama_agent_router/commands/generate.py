"""The config ``configure`` writes: a pure function of the detection, the answers file and the API key
entries (B.7), so tests feed it plain data. The answers file (B.8) is read and checked here too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..config.parse import parse_config
from ..config.reader import ConfigError, Context, load_yaml
from ..config.schema import PLANES
from ..config.yaml12 import yaml_dump
from .detect import Detection, OllamaModel

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
    ctx = Context(path, text)
    fail = ctx.error
    if not isinstance(data, dict):
        fail((), "must be a mapping of sections")
        raise ConfigError(ctx.errors)
    warnings = [ctx.unknown_key((), key, _ANSWER_KEYS) + ", ignored" for key in data if key not in _ANSWER_KEYS]
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
    if ctx.errors:
        raise ConfigError(ctx.errors)
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
            "vramSafetyReserveMb": reserve * max(1, det.gpu.count), "requireGpuOnlyByDefault": True,
            "monitor": {"enabled": True, "intervalMs": 5000, "nvidiaSmiPath": det.gpu.smi_path or "nvidia-smi"},
        }
    if det.apple_silicon:
        # Unified memory: models run on the GPU out of system RAM, so there is VRAM to plan with.
        name, vram, reserve = "Apple Silicon / macOS GPU", unified_memory_mb(det.ram_mb), 2048
    else:
        name, vram, reserve = ("macOS GPU" if det.platform == "darwin" else "No NVIDIA GPU detected"), 0, 1024
    return {
        "provider": "none", "name": name, "vramTotalMb": vram, "vramSafetyReserveMb": reserve,
        "requireGpuOnlyByDefault": False,
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


