"""Frozen dataclasses for the parsed configuration.

Attribute names are the YAML keys in snake_case (``requestBodyLimit`` -> ``request_body_limit``);
``to_json`` turns them back into the camelCase shape the original's endpoints expose.
Handlers never read raw dicts: ``files.load_config`` / ``parse.parse_config`` build these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CORE_TASK_TYPES: tuple[str, ...] = (
    "triage",
    "simple_chat",
    "summarize",
    "code_generate",
    "code_review",
    "code_fix",
    "agentic_reasoning",
    "large_context",
    "tool_use",
    "unknown",
)
# Labels a model's purpose or tags may carry that say what it can do rather than name a task type.
EMBEDDING_LABELS = frozenset({"embed", "embedding", "embeddings"})
THINKING_LABELS = frozenset({"reasoning", "thinking"})
CAPABILITY_LABELS = EMBEDDING_LABELS | THINKING_LABELS
PRIORITIES: tuple[str, ...] = ("low", "normal", "high")
PRIORITY_WEIGHTS: dict[str, int] = {"low": 10, "normal": 50, "high": 90}
PLANES: tuple[str, ...] = ("standalone", "runtimeAgent")


@dataclass(frozen=True)
class HttpsConfig:
    enabled: bool = False
    cert_path: str | None = None
    key_path: str | None = None
    ca_path: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    request_body_limit: int  # bytes, parsed like the `bytes` npm package ("8mb" -> 8388608)
    node_id: str = "local"
    base_path: str = "/"  # normalised: "/" or "/prefix" with no trailing slash
    https: HttpsConfig = HttpsConfig()
    # Bounds on what a client controls (beyond the original).
    max_connections: int = 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    idle_timeout_ms: int = 75_000
    shutdown_grace_ms: int = 15_000
    # CORS: requests carrying an Origin header not in this list are refused (403). Empty = no browser access.
    allowed_origins: tuple[str, ...] = ()
    # On a loopback address, Host names answered besides the local ones (DNS rebinding). Lower-cased.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class OllamaConfig:
    base_url: str
    request_timeout_ms: int
    open_ai_compatible_path: str = "/v1/chat/completions"
    native_api_base_path: str = "/api"
    keep_alive: str = "5m"
    connect_timeout_ms: int = 3_000
    first_byte_timeout_ms: int = 120_000
    poll_interval_ms: int = 1_000  # background refresh of /api/ps and /api/tags
    max_connections: int = 64  # upstream pool size
    max_reply_bytes: int = 64 << 20  # a whole (not streamed) reply larger than this is a 502


@dataclass(frozen=True)
class GpuMonitorConfig:
    interval_ms: int
    enabled: bool = False
    nvidia_smi_path: str = "nvidia-smi"


@dataclass(frozen=True)
class GpuConfig:
    vram_total_mb: float
    vram_safety_reserve_mb: float
    monitor: GpuMonitorConfig
    provider: str = "none"  # none | nvidia
    name: str | None = None
    require_gpu_only_by_default: bool = False


@dataclass(frozen=True)
class ClassificationConfig:
    # The classifier is heuristic only, as in the original: mode, optional_classifier_model and
    # classifier_timeout_ms change nothing. They stay because /v1/router/capabilities shows the router
    # section as configured (spec C.4), and Kong reads that shape.
    classifier_timeout_ms: int
    mode: str = "heuristic"  # heuristic | model
    optional_classifier_model: str | None = None
    large_context_tokens: int = 12_000
    min_confidence: float = 0.0


@dataclass(frozen=True)
class FailoverConfig:
    max_attempts: int = 2  # total tries for a sync request, the first one included
    cooldown_failures: int = 3  # consecutive failures that put a model in cooldown
    cooldown_ms: int = 30_000


@dataclass(frozen=True)
class StickyConfig:
    enabled: bool = True  # the default of a request's router.sticky
    max_conversations: int = 10_000
    idle_ttl_ms: int = 1_800_000  # a conversation idle this long is forgotten


@dataclass(frozen=True)
class RouterConfig:
    sync_max_queue_time_ms: int
    heavy_load_queue_depth: int
    heavy_load_gpu_free_mb_threshold: int
    classification: ClassificationConfig
    default_mode: str = "auto"  # auto | sync | async
    default_task_type: str = "unknown"
    unknown_model: str = "route"  # route | reject: what a client `model` naming no configured model does
    failover: FailoverConfig = FailoverConfig()
    sticky: StickyConfig = StickyConfig()
    # A request with no `router` object and no `Prefer: respond-async` (a plain SDK client) never gets a 202:
    # SDKs read a job body as an empty completion. True restores the TypeScript router's behaviour.
    async_for_plain_clients: bool = False


@dataclass(frozen=True)
class JobsConfig:
    result_ttl_seconds: int
    max_attempts: int
    cleanup_interval_ms: int
    store: str = "memory"  # memory | sqlite
    sqlite_path: str | None = None  # resolved against the config file's directory
    max_retained_jobs: int = 10_000
    retry_backoff_ms: int = 1_000
    # Bytes of requests, results and errors held by queued and retained jobs: all of them, and one caller's.
    max_retained_bytes: int = 256 << 20
    max_retained_bytes_per_owner: int = 64 << 20


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size_gb: float
    max_concurrent: int
    default_context: int
    max_context: int
    timeout_ms: int
    purpose: tuple[str, ...] = ()
    priority: float = 50
    cost_class: str = "medium"  # low | medium | high
    exclusive: bool = False
    allow_when_busy: bool = False
    tags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    pinned: bool = False
    prewarm: bool = False


def is_embedding_model(spec: ModelSpec) -> bool:
    """Embedding models are the ones labelled so in ``purpose`` or ``tags``; every other model completes text."""
    return not EMBEDDING_LABELS.isdisjoint(spec.purpose + spec.tags)


def can_think(spec: ModelSpec) -> bool:
    """A model labelled ``reasoning`` or ``thinking`` accepts a request for thinking (Ollama refuses it to
    other models with a 400)."""
    return not THINKING_LABELS.isdisjoint(spec.purpose + spec.tags)


@dataclass(frozen=True)
class QueueConfig:
    global_max_concurrent: int
    global_max_queued: int
    per_user_max_queued: int
    timeout_ms: int
    default_priority: str = "normal"
    aging_ms: int = 30_000  # a waiting request is promoted one priority level per aging_ms; 0: never
    load_batching: bool = True  # hold back a load that would evict a model with requests still waiting
    steer_evictions: bool = False  # the router, not Ollama, picks which idle models a load unloads


@dataclass(frozen=True)
class TrafficLimit:
    requests: int
    window_seconds: int


@dataclass(frozen=True)
class PlaneAuth:
    require_api_key: bool = False
    anonymous: str = "allow"  # allow | reject | limited


@dataclass(frozen=True)
class PlaneConfig:
    enabled: bool = True
    auth: PlaneAuth = PlaneAuth()
    default_limit: TrafficLimit | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    key_hash: str  # "sha256:<hex>" (lowercased), "pbkdf2-sha256:..." or "scrypt:..."
    scopes: tuple[str, ...]
    name: str | None = None
    enabled: bool = True
    limits: dict[str, TrafficLimit] = field(default_factory=dict)  # plane -> limit
    expires_at: str | None = None  # ISO-8601 UTC "...Z"


@dataclass(frozen=True)
class ManagedAccess:
    version: int = 1
    updated_at: str | None = None
    planes: dict[str, PlaneConfig] = field(
        default_factory=lambda: {"standalone": PlaneConfig(), "runtimeAgent": PlaneConfig()}
    )
    api_keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True)
class AdminKey:
    hash: str
    id: str | None = None


@dataclass(frozen=True)
class ClientCertConfig:
    required: bool = False
    allowed_fingerprints: tuple[str, ...] = ()
    allowed_subjects: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = False
    allowed_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    trusted_proxy: bool = False
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is honoured
    api_key_hashes: tuple[AdminKey, ...] = ()
    client_cert: ClientCertConfig = ClientCertConfig()
    audit_log: bool = True
    audit_log_path: str | None = None


@dataclass(frozen=True)
class AccessConfig:
    present: bool = False  # False when the YAML has no `access` section (everything open, admin off)
    managed_config_path: str | None = None  # absolute after loading
    bootstrap_if_missing: bool = True
    managed: ManagedAccess = ManagedAccess()
    admin: AdminConfig = AdminConfig()


@dataclass(frozen=True)
class MetricsConfig:
    require_api_key: bool = False
    bind: str | None = None  # "host:port" for a separate metrics listener


@dataclass(frozen=True)
class UiConfig:
    # Whose keys may read the live feed (GET /v1/router/events) that the dashboard and `oar top` show:
    # runtimeAgent (the policy of /v1/router/status) or admin.
    plane: str = "runtimeAgent"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    ollama: OllamaConfig
    gpu: GpuConfig
    router: RouterConfig
    jobs: JobsConfig
    models: tuple[ModelSpec, ...]
    routes: dict[str, tuple[str, ...]]
    queue: QueueConfig
    access: AccessConfig = AccessConfig()
    metrics: MetricsConfig = MetricsConfig()
    ui: UiConfig = UiConfig()
    path: str | None = None  # the file it came from, absolute
    # Mistakes that do not stop it (unknown keys, a purpose naming no task type), one line each, with
    # file and line, for ``serve`` to log and ``validate-config`` to print.
    warnings: tuple[str, ...] = ()

    def model(self, name: str) -> ModelSpec | None:
        for m in self.models:
            if m.name == name:
                return m
        return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def to_json(obj: Any, *, omit_none: bool = True) -> Any:
    """Render config dataclasses with camelCase keys. ``None`` values are omitted (never JSON null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and omit_none:
                continue
            out[_camel(f.name)] = to_json(value, omit_none=omit_none)
        return out
    if isinstance(obj, dict):
        return {k: to_json(v, omit_none=omit_none) for k, v in obj.items() if not (v is None and omit_none)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v, omit_none=omit_none) for v in obj]
    return obj
