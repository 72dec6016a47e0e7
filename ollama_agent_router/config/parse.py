"""The main config's schema: defaults, formats, the original's cross-field checks, and the entry points that
turn parsed YAML into frozen dataclasses (``parse_config``, ``parse_managed_access``, ``parse_api_key``).

Reading and locating problems is ``reader``'s job; the ``access`` section's schema lives in ``access``;
finding and reading files is ``files``'s.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from . import access as access_config
from .access import managed_to_json
from .reader import Context, Section, as_text, did_you_mean, load_yaml
from .schema import (
    CAPABILITY_LABELS,
    CORE_TASK_TYPES,
    ApiKey,
    ClassificationConfig,
    Config,
    FailoverConfig,
    GpuConfig,
    GpuMonitorConfig,
    HttpsConfig,
    JobsConfig,
    ManagedAccess,
    MetricsConfig,
    ModelSpec,
    OllamaConfig,
    QueueConfig,
    RouterConfig,
    ServerConfig,
    StickyConfig,
    UiConfig,
)
from .yaml12 import Quoted, yaml_dump

_T = TypeVar("_T")

# --- Scalars with a format ---------------------------------------------------------------------------

_SIZE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?) *([kmgtp]?b)?", re.IGNORECASE)


def parse_bytes_limit(value: str | int) -> int:
    """A size like the npm `bytes` package reads it (1024-based, ``8mb``, ``1.5 MB``, bare number = bytes).

    Unlike `bytes`, a suffix it does not know (``8m``, ``8mib``) is an error instead of a silent 8 bytes.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = math.floor(float(m[1]) * _SIZE_UNITS[(m[2] or "b").lower()])
    else:
        raise ValueError(
            f"invalid size {value!r}: use a number of bytes, or a number with b, kb, mb, gb, tb or pb (e.g. 8mb)"
        )
    if size <= 0:
        raise ValueError(f"invalid size {value!r}: must be greater than 0")
    return size


def normalize_base_path(value: str) -> str:
    """``ollama-router/`` -> ``/ollama-router``; empty, ``/`` or ``//`` -> ``/``."""
    inner = value.strip().strip("/")
    return f"/{inner}" if inner else "/"


_NODE_ID = re.compile(r"[a-zA-Z0-9.-]+")
_ORIGIN = re.compile(r"https?://[^/?#\s]+", re.IGNORECASE)
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _http_url(value: Any) -> str:
    url = as_text(value)
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a malformed port or IPv6 literal
        valid = False
    if not valid:
        raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
    return url


def _origin(value: str) -> str:
    if not _ORIGIN.fullmatch(value):
        raise ValueError(f"must be a browser origin like https://app.example.com, got {value!r}")
    return value.lower()


def _host_name(value: str) -> str:
    if not _HOST_NAME.fullmatch(value):
        raise ValueError(f"must be a host name like router.internal (no scheme or port), got {value!r}")
    return value.lower()


def _host_port(value: Any) -> str:
    """``host:port`` with an IPv6 host in brackets (``[::1]:9100``)."""
    text = as_text(value)
    host, _, port = text.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or (":" in bare and bare == host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f'must be "host:port" such as 127.0.0.1:9100 or [::1]:9100, got {text!r}')
    return text


# --- The main config's sections ----------------------------------------------------------------------


def _server(s: Section, base_dir: str) -> ServerConfig:
    node_id = s.text("nodeId", None)
    if node_id is not None and not _NODE_ID.fullmatch(node_id):
        s.message("nodeId", "server.nodeId may contain only letters, numbers, dots, and dashes")
    https = s.section("https")
    return s.build(
        ServerConfig,
        node_id=node_id,
        host=s.text("host"),
        port=s.integer("port", ge=1, le=65535),
        base_path=s.get("basePath", lambda v: normalize_base_path(as_text(v)), None),
        request_body_limit=s.get("requestBodyLimit", parse_bytes_limit),
        https=s.build(
            HttpsConfig,
            enabled=https.boolean("enabled", None),
            cert_path=https.resolve(base_dir, "certPath"),
            key_path=https.resolve(base_dir, "keyPath"),
            ca_path=https.resolve(base_dir, "caPath"),
        ),
        max_connections=s.integer("maxConnections", None, gt=0),
        max_header_bytes=s.integer("maxHeaderBytes", None, gt=0),
        max_headers=s.integer("maxHeaders", None, gt=0),
        header_timeout_ms=s.integer("headerTimeoutMs", None, gt=0),
        body_timeout_ms=s.integer("bodyTimeoutMs", None, gt=0),
        idle_timeout_ms=s.integer("idleTimeoutMs", None, gt=0),
        shutdown_grace_ms=s.integer("shutdownGraceMs", None, ge=0),
        allowed_origins=s.strings("allowedOrigins", None, check=_origin),
        allowed_hosts=s.strings("allowedHosts", None, check=_host_name),
    )


def _ollama(s: Section) -> OllamaConfig:
    return s.build(
        OllamaConfig,
        base_url=s.get("baseUrl", _http_url),
        request_timeout_ms=s.integer("requestTimeoutMs", gt=0),
        open_ai_compatible_path=s.text("openAiCompatiblePath", None),
        native_api_base_path=s.text("nativeApiBasePath", None),
        keep_alive=s.text("keepAlive", None),
        connect_timeout_ms=s.integer("connectTimeoutMs", None, gt=0),
        first_byte_timeout_ms=s.integer("firstByteTimeoutMs", None, gt=0),
        poll_interval_ms=s.integer("pollIntervalMs", None, gt=0),
        max_connections=s.integer("maxConnections", None, gt=0),
        max_reply_bytes=s.get("maxReplyBytes", parse_bytes_limit, None),
    )


def _gpu(s: Section) -> GpuConfig:
    monitor = s.section("monitor", required=True)
    # The original's key, checked so that its configs still mean what they say, but the original never used
    # it either: utilisation does not block a model (docs/migrating.md).
    s.number("maxGpuUtilizationPct", None, ge=1, le=100)
    return s.build(
        GpuConfig,
        provider=s.choice("provider", ("none", "nvidia"), None),
        name=s.text("name", None),
        vram_total_mb=s.number("vramTotalMb", ge=0),
        vram_safety_reserve_mb=s.number("vramSafetyReserveMb", ge=0),
        require_gpu_only_by_default=s.boolean("requireGpuOnlyByDefault", None),
        monitor=s.build(
            GpuMonitorConfig,
            enabled=monitor.boolean("enabled", None),
            interval_ms=monitor.integer("intervalMs", gt=0),
            nvidia_smi_path=monitor.text("nvidiaSmiPath", None),
        ),
    )


def _router(s: Section) -> RouterConfig:
    c = s.section("classification", required=True)
    classification = s.build(
        ClassificationConfig,
        mode=c.choice("mode", ("heuristic", "model"), None),
        optional_classifier_model=c.text("optionalClassifierModel", None),
        classifier_timeout_ms=c.integer("classifierTimeoutMs", gt=0),
        large_context_tokens=c.integer("largeContextTokens", None, gt=0),
        min_confidence=c.number("minConfidence", None, ge=0, le=1),
    )
    f = s.section("failover")
    st = s.section("sticky")
    return s.build(
        RouterConfig,
        default_mode=s.choice("defaultMode", ("auto", "sync", "async"), None),
        sync_max_queue_time_ms=s.integer("syncMaxQueueTimeMs", ge=0),
        heavy_load_queue_depth=s.integer("heavyLoadQueueDepth", ge=0),
        heavy_load_gpu_free_mb_threshold=s.integer("heavyLoadGpuFreeMbThreshold", ge=0),
        default_task_type=s.text("defaultTaskType", None),
        unknown_model=s.choice("unknownModel", ("route", "reject"), None),
        async_for_plain_clients=s.boolean("asyncForPlainClients", None),
        classification=classification,
        failover=s.build(
            FailoverConfig,
            max_attempts=f.integer("maxAttempts", None, gt=0),
            cooldown_failures=f.integer("cooldownFailures", None, gt=0),
            cooldown_ms=f.integer("cooldownMs", None, ge=0),
        ),
        sticky=s.build(
            StickyConfig,
            enabled=st.boolean("enabled", None),
            max_conversations=st.integer("maxConversations", None, gt=0),
            idle_ttl_ms=st.integer("idleTtlMs", None, gt=0),
        ),
    )


def _jobs(s: Section, base_dir: str) -> JobsConfig:
    store = s.choice("store", ("memory", "sqlite"), None)
    sqlite_path = s.resolve(base_dir, "sqlitePath")
    if store == "sqlite" and sqlite_path is None:
        # Without a path the database lives next to the config file, like the managed access file.
        sqlite_path = os.path.join(base_dir, "jobs.sqlite")
    return s.build(
        JobsConfig,
        store=store,
        sqlite_path=sqlite_path,
        result_ttl_seconds=s.integer("resultTtlSeconds", gt=0),
        max_attempts=s.integer("maxAttempts", gt=0),
        cleanup_interval_ms=s.integer("cleanupIntervalMs", gt=0),
        max_retained_jobs=s.integer("maxRetainedJobs", None, gt=0),
        retry_backoff_ms=s.integer("retryBackoffMs", None, ge=0),
        max_retained_bytes=s.get("maxRetainedBytes", parse_bytes_limit, None),
        max_retained_bytes_per_owner=s.get("maxRetainedBytesPerOwner", parse_bytes_limit, None),
    )


def _model(s: Section) -> ModelSpec:
    model = s.build(
        ModelSpec,
        name=s.text("name"),
        size_gb=s.number("sizeGb", gt=0),
        purpose=s.strings("purpose", None),
        priority=s.number("priority", None),
        max_concurrent=s.integer("maxConcurrent", gt=0),
        default_context=s.integer("defaultContext", gt=0),
        max_context=s.integer("maxContext", gt=0),
        timeout_ms=s.integer("timeoutMs", gt=0),
        cost_class=s.choice("costClass", ("low", "medium", "high"), None),
        exclusive=s.boolean("exclusive", None),
        allow_when_busy=s.boolean("allowWhenBusy", None),
        tags=s.strings("tags", None),
        aliases=s.strings("aliases", None),
        pinned=s.boolean("pinned", None),
        prewarm=s.boolean("prewarm", None),
    )
    if model.default_context and model.max_context and model.default_context > model.max_context:
        s.fail("defaultContext", f"must be <= maxContext ({model.max_context})")
    return model


def _models(root: Section) -> tuple[list[ModelSpec], bool]:
    """The models, and whether every entry has a valid name (only then can route references be checked)."""
    if root.raw("models") == []:
        root.fail("models", "must contain at least one model")
    entries = [(s, _model(s)) for s in root.sections("models", required=True)]
    owner: dict[str, str] = {}  # a name or alias -> the model that claims it
    for s, model in entries:
        if model.name in owner:
            s.fail("name", f"duplicate model name {model.name!r}")
        owner.setdefault(model.name, model.name)
    for s, model in entries:
        for i, alias in enumerate(model.aliases):
            claimed_by = owner.setdefault(alias, model.name)
            if claimed_by != model.name:
                s.ctx.error(s.path + ("aliases", i), f"alias {alias!r} is already taken by model {claimed_by!r}")
    models = [model for _, model in entries]
    return models, bool(models) and all(isinstance(m.name, str) for m in models)


def _routes(root: Section) -> dict[str, tuple[str, ...]]:
    s = root.section("routes", required=True)
    routes: dict[str, tuple[str, ...]] = {}
    for task in s.data:
        value = s.raw(task)  # route names are free: reading one makes it known
        if not isinstance(task, str) or not task:
            s.fail(None, f"route names must be non-empty strings, got {task!r}")
        elif not isinstance(value, list):
            s.fail(task, "must be a list of model names")
        else:
            routes[task] = s.strings(task)
    return routes


def _queue(s: Section) -> QueueConfig:
    return s.build(
        QueueConfig,
        global_max_concurrent=s.integer("globalMaxConcurrent", gt=0),
        global_max_queued=s.integer("globalMaxQueued", ge=0),
        per_user_max_queued=s.integer("perUserMaxQueued", ge=0),
        timeout_ms=s.integer("timeoutMs", gt=0),
        default_priority=s.choice("defaultPriority", ("low", "normal", "high"), None),
        aging_ms=s.integer("agingMs", None, ge=0),
        load_batching=s.boolean("loadBatching", None),
        steer_evictions=s.boolean("steerEvictions", None),
    )


def _metrics(s: Section) -> MetricsConfig:
    return s.build(
        MetricsConfig,
        require_api_key=s.boolean("requireApiKey", None),
        bind=s.get("bind", _host_port, None),
    )


def _ui(s: Section) -> UiConfig:
    return s.build(UiConfig, plane=s.choice("plane", ("runtimeAgent", "admin"), None))


def _cross_checks(ctx: Context, config: Config, models_named: bool) -> None:
    """The original's boot checks, with its exact messages, in its order (A.12)."""
    https, admin = config.server.https, config.access.admin
    if https.enabled and not (https.cert_path and https.key_path):
        ctx.message(
            ("server", "https", "enabled"),
            "server.https.certPath and server.https.keyPath are required when HTTPS is enabled",
        )
    if admin.enabled and not config.access.managed_config_path:
        ctx.message(
            ("access", "admin", "enabled"),
            "access.managedConfigPath is required when access.admin.enabled is true",
        )
    if admin.enabled and not admin.api_key_hashes:
        ctx.message(
            ("access", "admin", "apiKeyHashes"),
            "access.admin.apiKeyHashes must contain at least one hash when access.admin.enabled is true",
        )
    if admin.enabled and admin.client_cert.required and not (https.enabled and https.ca_path):
        ctx.message(
            ("access", "admin", "clientCert", "required"),
            "server.https.enabled and server.https.caPath are required"
            " when access.admin.clientCert.required is true",
        )
    if models_named:
        known = {m.name for m in config.models}
        unknown = [(task, name) for task, names in config.routes.items() for name in names if name not in known]
        if unknown:
            ctx.message(
                ("routes", unknown[0][0]),
                "Routes reference unknown models: " + ", ".join(f"{task}:{name}" for task, name in unknown),
            )


def parse_config(
    data: Any, *, source: str | None = None, base_dir: str | None = None, text: str | None = None,
    strict: bool = False,
) -> Config:
    """Validate parsed YAML into a Config. Relative file paths resolve against ``base_dir`` (by default
    the directory of ``source``). Reads no files: the managed access file is ``load_config``'s job.

    Unknown keys are errors when ``strict``, else they join the other ``Config.warnings``."""
    ctx = Context(source, text, strict=strict)
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    base_dir = os.path.abspath(base_dir)
    root = Section(ctx, data, ())
    # Sections are read in the order a config file usually has them, so errors come out in that order.
    server = _server(root.section("server", required=True), base_dir)
    ollama = _ollama(root.section("ollama", required=True))
    gpu = _gpu(root.section("gpu", required=True))
    router = _router(root.section("router", required=True))
    jobs = _jobs(root.section("jobs", required=True), base_dir)
    models, models_named = _models(root)
    config = Config(
        server=server,
        ollama=ollama,
        gpu=gpu,
        router=router,
        jobs=jobs,
        models=tuple(models),
        routes=_routes(root),
        queue=_queue(root.section("queue", required=True)),
        access=access_config.read_access(root.section("access"), base_dir, present="access" in root.data),
        metrics=_metrics(root.section("metrics")),
        ui=_ui(root.section("ui")),
        path=os.path.abspath(source) if source else None,
    )
    _cross_checks(ctx, config, models_named)
    _check_task_types(ctx, config)
    return replace(config, warnings=ctx.finish())


def _check_task_types(ctx: Context, config: Config) -> None:
    """A purpose or tag that names no task type (nor a capability such as ``embedding``) is most likely a typo:
    the classifier never answers it."""
    task_types = (*CORE_TASK_TYPES, *config.routes)
    for i, model in enumerate(config.models):
        for key in ("purpose", "tags"):
            for j, value in enumerate(getattr(model, key)):
                if value not in task_types and value not in CAPABILITY_LABELS:
                    ctx.warn(("models", i, key, j), f"{value!r} is neither a core task type nor a route name, so only"
                             " requests that give it as router.taskType match it" + did_you_mean(value, task_types))


def _parse_with(read: Callable[[Section], _T], data: Any, source: str | None, text: str | None,
                strict: bool) -> tuple[_T, tuple[str, ...]]:
    ctx = Context(source, text, strict=strict)
    result = read(Section(ctx, data, ()))
    return result, ctx.finish()


def parse_managed_access(data: Any, *, source: str | None = None, text: str | None = None) -> ManagedAccess:
    """The managed access policy (an admin PUT body), defaults applied. Unknown keys are ignored, as the
    original's admin API ignored them."""
    return _parse_with(access_config.read_managed, data, source, text, False)[0]


def parse_managed_file(text: str, source: str, *, strict: bool = False) -> tuple[ManagedAccess, tuple[str, ...]]:
    """The managed access file's policy and its warnings (unknown keys: errors when ``strict``)."""
    return _parse_with(access_config.read_managed, load_yaml(text, source=source), source, text, strict)


def parse_api_key(data: Any, *, source: str | None = None) -> ApiKey:
    """One API key entry (an admin POST body), defaults applied; unknown keys are ignored."""
    return _parse_with(access_config.read_api_key, data, source, None, False)[0]


def dump_managed_access(m: ManagedAccess) -> str:
    """The managed file's YAML. ``updatedAt`` is quoted so that YAML 1.1 readers keep it a string."""
    data = managed_to_json(m)
    if "updatedAt" in data:
        data["updatedAt"] = Quoted(data["updatedAt"])
    return yaml_dump(data)
