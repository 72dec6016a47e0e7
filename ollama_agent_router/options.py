"""A request's routing options: its ``router`` object (and ``Prefer`` header) with the config's defaults
applied, checked once at the door into a ``RouterMeta`` that routing and the runner read."""

from __future__ import annotations

from typing import Any, NamedTuple

from .config.schema import PRIORITIES, Config
from .errors import HttpError

MODES = ("auto", "sync", "async")


class RouterMeta(NamedTuple):
    """The request's routing options, defaults applied."""

    mode: str
    allow_async: bool
    task_type: str
    priority: str
    preferred_models: tuple[str, ...]
    forbidden_models: tuple[str, ...]
    max_queue_time_ms: int
    max_execution_time_ms: int | None  # None: the model's timeoutMs
    require_gpu_only: bool
    explain: bool = False
    max_queue_time_explicit: bool = False
    wait_when_busy: bool = False  # a plain client queues behind a busy model, as at Ollama, instead of a 503
    sticky: bool = True  # keep the conversation on its model (router.sticky; sessions.py)

    @property
    def can_go_async(self) -> bool:
        return self.allow_async and self.mode != "sync"

    def wait_ms(self, can_go_async: bool) -> int | None:
        """How long to wait for a slot. An async-capable request waits ``syncMaxQueueTimeMs`` and then
        becomes a job; any other waits as long as it asked, else (None) up to the model's timeout."""
        return self.max_queue_time_ms if can_go_async or self.max_queue_time_explicit else None


def _bad(message: str) -> HttpError:
    return HttpError(400, message, code="invalid_router_options")


def _string_list(value: Any, name: str, lenient: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if lenient and isinstance(value, dict) and not value:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"router.{name} must be an array of strings")
    return tuple(value)


def normalize_meta(raw: Any, cfg: Config, *, lenient: bool = False, prefer_async: bool = False) -> RouterMeta:
    """The request's ``router`` object with the config defaults of spec §5.1 applied.

    A request with no ``router`` object that did not send ``Prefer: respond-async`` (``prefer_async``) is a
    plain client: an SDK that reads a 202 job body as an empty completion. It never goes async (unless
    ``router.asyncForPlainClients``) and waits behind a busy model as it would at Ollama. ``lenient`` (the
    Kong runtime plane) turns unknown priorities into the default instead of a 400.
    """
    plain = raw is None and not prefer_async
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _bad("router must be an object")
    mode = raw.get("mode", cfg.router.default_mode)
    if mode not in MODES:
        raise _bad("router.mode must be one of auto, sync, async")
    allow_async = raw.get("allowAsync", cfg.router.async_for_plain_clients if plain else True)
    if not isinstance(allow_async, bool):
        raise _bad("router.allowAsync must be a boolean")
    task_type = raw.get("taskType", "auto")
    if not isinstance(task_type, str):
        raise _bad("router.taskType must be a string")
    priority = raw.get("priority", cfg.queue.default_priority)
    if priority not in PRIORITIES:
        if not lenient:
            raise _bad("router.priority must be one of low, normal, high")
        priority = cfg.queue.default_priority
    max_queue = raw.get("maxQueueTimeMs")
    if max_queue is not None and (not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 0):
        raise _bad("router.maxQueueTimeMs must be an integer >= 0")
    max_exec = raw.get("maxExecutionTimeMs")
    if max_exec is not None and (not isinstance(max_exec, int) or isinstance(max_exec, bool) or max_exec <= 0):
        raise _bad("router.maxExecutionTimeMs must be an integer > 0")
    gpu_only = raw.get("requireGpuOnly", cfg.gpu.require_gpu_only_by_default)
    if not isinstance(gpu_only, bool):
        raise _bad("router.requireGpuOnly must be a boolean")
    explain = raw.get("explain", False)
    if not isinstance(explain, bool):
        raise _bad("router.explain must be a boolean")
    sticky = raw.get("sticky", cfg.router.sticky.enabled)
    if not isinstance(sticky, bool):
        raise _bad("router.sticky must be a boolean")
    return RouterMeta(
        mode=mode,
        allow_async=allow_async,
        task_type=task_type,
        priority=priority,
        preferred_models=_string_list(raw.get("preferredModels"), "preferredModels", lenient),
        forbidden_models=_string_list(raw.get("forbiddenModels"), "forbiddenModels", lenient),
        max_queue_time_ms=cfg.router.sync_max_queue_time_ms if max_queue is None else max_queue,
        max_execution_time_ms=max_exec,
        require_gpu_only=gpu_only,
        explain=explain,
        max_queue_time_explicit=max_queue is not None,
        wait_when_busy=plain and not allow_async,
        sticky=sticky,
    )
