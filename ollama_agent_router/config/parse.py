"""Configuration: schema with defaults, cross-field checks, file lookup, and the managed access file.

Every problem is collected (not only the first) and reported as ``<file>:<line>: <yaml.path>: <problem>``.
The ``access`` section's schema lives in ``access_config``; it reads through the ``Section`` defined here.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import MISSING, fields, replace
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import yaml

from ..fsutil import atomic_write_text
from . import access as access_config
from .access import managed_to_json
from .schema import (
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
)
from .yaml12 import Quoted, yaml_dump, yaml_key_lines, yaml_load


class ConfigError(Exception):
    """A configuration that cannot be used. ``errors`` holds one line per problem."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def load_yaml(text: str, *, source: str | None = None) -> Any:
    """Parse one YAML document with 1.2 core semantics; bad YAML is a ConfigError naming the line."""
    try:
        return yaml_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(_located(source, line, f"invalid YAML: {e.problem or e.context}")) from None
    except yaml.YAMLError as e:
        raise ConfigError(_located(source, None, f"invalid YAML: {e}")) from None


_Path = tuple[Any, ...]


def _located(source: str | None, line: int | None, message: str) -> str:
    if source and line:
        return f"{source}:{line}: {message}"
    if source:
        return f"{source}: {message}"
    if line:
        return f"line {line}: {message}"
    return message


def _format_path(path: _Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# --- Reading values ---------------------------------------------------------------------------------


class _Context:
    def __init__(self, source: str | None, text: str | None) -> None:
        self.source = source
        self.lines = yaml_key_lines(text) if text is not None else {}
        self.errors: list[str] = []

    def line(self, path: _Path) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: _Path, problem: str) -> None:
        self.errors.append(_located(self.source, self.line(path), f"{_format_path(path)}: {problem}"))

    def message(self, path: _Path, message: str) -> None:
        """Record a message that already names its setting (the original's cross-field messages)."""
        self.errors.append(_located(self.source, self.line(path), message))


_REQUIRED: Any = object()
_T = TypeVar("_T")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "a list")):
        if isinstance(value, types):
            return name
    return "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}"


def _bounds(gt: float | None, ge: float | None, le: float | None) -> str:
    parts = [f"{op} {v}" for op, v in ((">", gt), (">=", ge), ("<=", le)) if v is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _as_number(value: Any, *, integral: bool, gt: Any, ge: Any, le: Any) -> int | float:
    """A YAML number within bounds; integral floats become ints so JSON output matches the original."""
    what = ("an integer" if integral else "a number") + _bounds(gt, ge, le)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be {what}, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or (integral and not value.is_integer()):
            raise ValueError(f"must be {what}, got {value}")
        if value.is_integer():
            value = int(value)
    if (gt is not None and value <= gt) or (ge is not None and value < ge) or (le is not None and value > le):
        raise ValueError(f"must be {what}, got {value}")
    return value


class Section:
    """A mapping being read at ``path``. Problems are recorded and reading goes on, so that all are reported.

    A null value counts as absent. A section under a missing or broken parent is ``quiet``: it yields
    defaults without repeating errors the parent already reported.
    """

    def __init__(self, ctx: _Context, data: Any, path: _Path, *, quiet: bool = False) -> None:
        self.ctx = ctx
        self.path = path
        self.quiet = quiet
        self.data: dict[Any, Any] = data if isinstance(data, dict) else {}
        if not isinstance(data, dict) and not quiet:
            ctx.error(path, f"must be a mapping, got {_kind(data)}")
            self.quiet = True

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def fail(self, key: str | int | None, problem: str) -> None:
        if not self.quiet:
            self.ctx.error(self.path if key is None else self.path + (key,), problem)

    def message(self, key: str, message: str) -> None:
        if not self.quiet:
            self.ctx.message(self.path + (key,), message)

    def get(self, key: str, check: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        """``check`` returns the parsed value or raises ValueError with the problem."""
        value = self.data.get(key)
        if value is None:
            if default is _REQUIRED:
                self.fail(key, "is required")
                return None
            return default
        try:
            return check(value)
        except ValueError as e:
            self.fail(key, str(e))
            return None if default is _REQUIRED else default

    def integer(self, key: str, default: Any = _REQUIRED, *, gt: Any = None, ge: Any = None, le: Any = None):
        return self.get(key, lambda v: _as_number(v, integral=True, gt=gt, ge=ge, le=le), default)

    def number(self, key: str, default: Any = _REQUIRED, *, gt: Any = None, ge: Any = None, le: Any = None):
        return self.get(key, lambda v: _as_number(v, integral=False, gt=gt, ge=ge, le=le), default)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        return self.get(key, _as_bool, default)

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        return self.get(key, _as_text, default)

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        def check(value: Any) -> str:
            if value not in options:
                raise ValueError(f"must be one of {', '.join(options)}")
            return value

        return self.get(key, check, default)

    def strings(self, key: str, default: Any = (), check: Callable[[str], Any] = lambda s: s) -> Any:
        """A list of non-empty strings, each passed through ``check``, as a tuple."""
        entries = self.items(key, required=False)
        if entries is None:
            return default
        values = (self.item(path, value, lambda v: check(_as_text(v))) for path, value in entries)
        return tuple(v for v in values if v is not None)

    def item(self, path: _Path, value: Any, check: Callable[[Any], Any]) -> Any:
        """One list entry through ``check``; None after recording the problem."""
        try:
            return check(value)
        except ValueError as e:
            if not self.quiet:
                self.ctx.error(path, str(e))
            return None

    def items(self, key: str, *, required: bool) -> list[tuple[_Path, Any]] | None:
        """The entries of a list with their paths; None (after saying why) when absent or not a list."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_kind(value)}")
            return None
        return [(self.path + (key, i), item) for i, item in enumerate(value)]

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return Section(self.ctx, {}, self.path + (key,), quiet=self.quiet or required)
        return Section(self.ctx, value, self.path + (key,), quiet=self.quiet)

    def sections(self, key: str, *, required: bool = False) -> list[Section]:
        return [self.child(path, item) for path, item in self.items(key, required=required) or []]

    def child(self, path: _Path, data: Any) -> Section:
        return Section(self.ctx, data, path, quiet=self.quiet)

    def resolve(self, base_dir: str, key: str) -> Any:
        """An optional file path, made absolute against ``base_dir`` (the config file's directory)."""
        value = self.text(key, None)
        return None if value is None else os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))

    @staticmethod
    def build(cls: type[_T], **values: Any) -> _T:
        """Construct a config dataclass. None for a field that has a default means "use the default",
        so the defaults live in one place: ``config_types``."""
        optional = {f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
        return cls(**{k: v for k, v in values.items() if v is not None or k not in optional})


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_kind(value)}")
    return value


def _as_text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


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
    url = _as_text(value)
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
    text = _as_text(value)
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
    limit = s.data.get("requestBodyLimit")
    https = s.section("https")
    return s.build(
        ServerConfig,
        node_id=node_id,
        host=s.text("host"),
        port=s.integer("port", ge=1, le=65535),
        base_path=s.get("basePath", lambda v: normalize_base_path(_as_text(v)), None),
        request_body_limit=s.get("requestBodyLimit", parse_bytes_limit),
        request_body_limit_text=None if limit is None else str(limit),
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
    return s.build(
        GpuConfig,
        provider=s.choice("provider", ("none", "nvidia"), None),
        name=s.text("name", None),
        vram_total_mb=s.number("vramTotalMb", ge=0),
        vram_safety_reserve_mb=s.number("vramSafetyReserveMb", ge=0),
        max_gpu_utilization_pct=s.number("maxGpuUtilizationPct", ge=1, le=100),
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
    if classification.mode == "model" and classification.optional_classifier_model is None:
        c.fail("optionalClassifierModel", "is required when mode is model")
    f = s.section("failover")
    return s.build(
        RouterConfig,
        default_mode=s.choice("defaultMode", ("auto", "sync", "async"), None),
        sync_max_queue_time_ms=s.integer("syncMaxQueueTimeMs", ge=0),
        heavy_load_queue_depth=s.integer("heavyLoadQueueDepth", ge=0),
        heavy_load_gpu_free_mb_threshold=s.integer("heavyLoadGpuFreeMbThreshold", ge=0),
        default_task_type=s.text("defaultTaskType", None),
        unknown_model=s.choice("unknownModel", ("route", "reject"), None),
        classification=classification,
        failover=s.build(
            FailoverConfig,
            max_attempts=f.integer("maxAttempts", None, gt=0),
            cooldown_failures=f.integer("cooldownFailures", None, gt=0),
            cooldown_ms=f.integer("cooldownMs", None, ge=0),
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
    if root.data.get("models") == []:
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
        if not isinstance(task, str) or not task:
            s.fail(None, f"route names must be non-empty strings, got {task!r}")
        elif not isinstance(s.data[task], list):
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
        aging_ms=s.integer("agingMs", None, gt=0),
    )


def _metrics(s: Section) -> MetricsConfig:
    return s.build(
        MetricsConfig,
        require_api_key=s.boolean("requireApiKey", None),
        bind=s.get("bind", _host_port, None),
    )


def _cross_checks(ctx: _Context, config: Config, models_named: bool) -> None:
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
    data: Any, *, source: str | None = None, base_dir: str | None = None, text: str | None = None
) -> Config:
    """Validate parsed YAML into a Config. Relative file paths resolve against ``base_dir`` (by default
    the directory of ``source``). Reads no files: the managed access file is ``load_config``'s job."""
    ctx = _Context(source, text)
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
        path=os.path.abspath(source) if source else None,
    )
    _cross_checks(ctx, config, models_named)
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return config


def _parse_with(read: Callable[[Section], _T], data: Any, source: str | None, text: str | None) -> _T:
    ctx = _Context(source, text)
    result = read(Section(ctx, data, ()))
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return result


def parse_managed_access(data: Any, *, source: str | None = None, text: str | None = None) -> ManagedAccess:
    """The managed access policy (the managed file, or an admin PUT body), defaults applied."""
    return _parse_with(access_config.read_managed, data, source, text)


def parse_api_key(data: Any, *, source: str | None = None) -> ApiKey:
    """One API key entry (an admin POST body), defaults applied."""
    return _parse_with(access_config.read_api_key, data, source, None)


def dump_managed_access(m: ManagedAccess) -> str:
    """The managed file's YAML. ``updatedAt`` is quoted so that YAML 1.1 readers keep it a string."""
    data = managed_to_json(m)
    if "updatedAt" in data:
        data["updatedAt"] = Quoted(data["updatedAt"])
    return yaml_dump(data)


# --- Finding and loading files -----------------------------------------------------------------------


def lookup_paths(explicit: str | None) -> list[str]:
    """Where the config is looked for. An explicit path is the only candidate: no silent fallback."""
    if explicit is not None:
        return [os.path.abspath(os.path.expanduser(explicit))]
    return [
        os.path.abspath("ollama-agent-router.yaml"),
        os.path.expanduser("~/.config/ollama-agent-router/config.yaml"),
        "/etc/ollama-agent-router/config.yaml",
    ]


def find_config(explicit: str | None) -> str:
    paths = lookup_paths(explicit)
    for path in paths:
        if os.path.isfile(path):
            return path
    if explicit is not None:
        raise ConfigError(f"Config file not found: {paths[0]}")
    raise ConfigError(f"No config file found. Tried: {', '.join(paths)}")


def load_config(explicit: str | None = None, *, bootstrap: bool = True) -> Config:
    """Find, read and validate the config, then load the managed access file.

    With ``bootstrap`` (``serve``) a missing managed file is created from the inline policy. Without it
    (``validate-config``) nothing is written: what exists is validated.
    """
    return load_config_file(find_config(explicit), bootstrap=bootstrap)


def load_config_file(path: str, *, bootstrap: bool = True) -> Config:
    path = os.path.abspath(path)
    text = _read(path)
    if text is None:
        raise ConfigError(f"Config file not found: {path}")
    config = parse_config(load_yaml(text, source=path), source=path, text=text)
    return _with_managed_file(config, bootstrap=bootstrap)


def _read(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def _with_managed_file(config: Config, *, bootstrap: bool) -> Config:
    access = config.access
    path = access.managed_config_path
    if path is None:
        return config
    text = _read(path)
    if text is not None:
        managed = parse_managed_access(load_yaml(text, source=path), source=path, text=text)
        directory = os.path.dirname(path)
        if bootstrap and access.admin.enabled and not os.access(directory, os.W_OK | os.X_OK):
            # Found at boot rather than on the first admin change (e.g. /etc under systemd's ProtectSystem).
            raise ConfigError(
                f"access.managedConfigPath: the directory {directory} is not writable, so admin changes could not"
                " be saved; use a writable place such as /var/lib/ollama-agent-router/access.yaml"
            )
    elif not access.bootstrap_if_missing:
        raise ConfigError(f"Managed access file not found: {path} (access.bootstrapIfMissing is false)")
    else:
        managed = access.managed
        if bootstrap:
            try:
                atomic_write_text(path, dump_managed_access(managed), mode=0o600)
            except OSError as e:
                raise ConfigError(f"Cannot create the managed access file {path}: {e.strerror or e}") from None
    return replace(config, access=replace(access, managed=managed))
