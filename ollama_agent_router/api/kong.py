"""Kong's runtime-agent contract (spec Part C): capabilities, runtime snapshot, execute and jobs.

Kong has already classified the request and chosen the model; this node runs it on that model's
queue, with no re-routing, and answers in the exact shapes the plugin reads. Nothing here emits JSON
null: the plugin's lua-cjson turns it into a truthy value and crashes. The two snapshot endpoints
answer from memory, because Kong drops a node that takes longer than 500 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..config.schema import PRIORITIES, Config, to_json
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jobs import JobManager
from ..jsonutil import dumps, iso_ms
from ..options import RouterMeta, normalize_meta
from ..relay import OPENAI_SSE, sse_comment
from ..routing import RoutingTable
from ..runner import Call, Exchange, Runner, forward_body
from ..scheduler import Scheduler
from ..snapshot import Snapshot
from ..upstream import json_or_raw
from .bodies import read_json, validate_chat_body
from .render import plain_json
from .table import Route

PLANE = "runtimeAgent"
KONG_CHOSE = "Chosen by Kong"  # Kong classified and decided; this node only runs it


@dataclass(frozen=True)
class KongCall:
    """An execute or job request from Kong, validated leniently (C.6: any task type, unknown priorities)."""

    model: str
    request: dict  # the client's chat body, its `router` object included
    meta: RouterMeta
    priority: str
    task_type: str


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def parse_call(cfg: Config, table: RoutingTable, body: Any) -> KongCall:
    """Validate Kong's envelope: 400 for a malformed one, 404 for a model this node does not serve."""
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    selected = body.get("selectedModel")
    if not isinstance(selected, str) or not selected:
        raise HttpError(400, "selectedModel must be a non-empty string", code="invalid_body")
    if not isinstance(body.get("request"), dict):
        raise HttpError(400, "request must be an object holding the client's chat body", code="invalid_body")
    request = validate_chat_body(body["request"])
    meta = normalize_meta(request.get("router"), cfg, lenient=True)
    model = table.resolve(selected)
    if model is None:
        raise HttpError(404, f"Unknown configured model: {selected}", code="model_not_found")
    decision = _object(body.get("routerDecision"))
    classification = _object(body.get("classification"))
    priority = next((p for p in (body.get("priority"), decision.get("priority")) if p in PRIORITIES), meta.priority)
    task = next((t for t in (classification.get("taskType"), decision.get("taskType")) if isinstance(t, str) and t),
                cfg.router.default_task_type)
    return KongCall(model, request, meta, priority, task)


def capabilities_body(cfg: Config) -> dict:
    """C.4: static configuration, model ``tags`` included (Kong scores them)."""
    return plain_json({
        "nodeId": cfg.server.node_id,
        "status": "ok",
        "version": __version__,
        "router": to_json(cfg.router),
        "gpu": {"requireGpuOnlyByDefault": cfg.gpu.require_gpu_only_by_default,
                "vramSafetyReserveMb": cfg.gpu.vram_safety_reserve_mb},
        "queue": {"defaultPriority": cfg.queue.default_priority, "timeoutMs": cfg.queue.timeout_ms},
        "models": [to_json(m) for m in cfg.models],
        "routes": {task: list(names) for task, names in cfg.routes.items()},
    })


def runtime_body(cfg: Config, snapshot: Snapshot, scheduler: Scheduler, jobs: JobManager) -> dict:
    """C.5, from the background snapshot; ``gpu`` is absent (never null) when there is no GPU reading."""
    body: dict[str, Any] = {
        "nodeId": cfg.server.node_id,
        "status": snapshot.status,
        "timestamp": iso_ms(),
        "snapshotAgeMs": snapshot.snapshot_age_ms(),
        "ollama": {"baseUrl": snapshot.client.display_url, "reachable": snapshot.ollama_reachable},
    }
    gpu = snapshot.gpu_json()
    if gpu is not None:
        body["gpu"] = plain_json(gpu)  # the only part with floats; the rest is ints and strings already
    body["loadedModels"] = snapshot.loaded_models
    body["queues"] = scheduler.snapshot()
    body["jobs"] = jobs.summary()
    return body


class KongReply:
    """Execute's reply: ``{result, nodeId, selectedModel, queueTimeMs, executionTimeMs}`` with no nulls; a
    stream says the node's facts in headers and a leading SSE comment, then relays the events untouched."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def headers(self, ex: Exchange) -> list[tuple[str, str]]:
        return [("X-Router-Node-Id", self.node_id), ("X-Router-Selected-Model", ex.model),
                ("X-Router-Queue-Time-Ms", str(ex.queue_ms))]

    def prelude(self, ex: Exchange) -> bytes:
        return sse_comment("router", {"nodeId": self.node_id, "selectedModel": ex.model, "queueTimeMs": ex.queue_ms})

    def body(self, raw: bytes, ex: Exchange) -> bytes:
        return dumps(plain_json({"result": json_or_raw(raw), "nodeId": self.node_id, "selectedModel": ex.model,
                                 "queueTimeMs": ex.queue_ms, "executionTimeMs": ex.execution_ms()}))


class KongDoor:
    def __init__(self, cfg: Config, runner: Runner, jobs: JobManager, table: RoutingTable, snapshot: Snapshot,
                 scheduler: Scheduler) -> None:
        self.cfg = cfg
        self.runner = runner
        self.jobs = jobs
        self.table = table
        self.snapshot = snapshot
        self.scheduler = scheduler
        self.node_id = cfg.server.node_id
        self._capabilities = dumps(capabilities_body(cfg))

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/router/capabilities", PLANE, self.capabilities),
            Route("GET", "/v1/router/runtime", PLANE, self.runtime),
            Route("POST", "/v1/router/execute", PLANE, self.execute),
            Route("POST", "/v1/router/jobs", PLANE, self.create_job),
        ]

    async def capabilities(self, req: Request, params: dict[str, str]) -> Response:
        return Response(200, self._capabilities)

    async def runtime(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, runtime_body(self.cfg, self.snapshot, self.scheduler, self.jobs))

    async def _parse(self, req: Request, mode: str, started: float) -> KongCall:
        try:
            call = parse_call(self.cfg, self.table, await read_json(req))
            if mode == "async" and call.request.get("stream") is True:
                raise HttpError(400, "stream: true cannot be combined with an async job", code="invalid_router_options")
        except HttpError as e:
            self.runner.count(PLANE, None, None, mode, e.status, started, api="kong", reason=e.code)
            raise
        req.log.update(model=call.model, taskType=call.task_type)
        return call

    async def execute(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        started = time.perf_counter()
        kc = await self._parse(req, "sync", started)
        meta = kc.meta
        # Kong already judged the queue when it chose sync: without an explicit bound it waits as long as it may run.
        wait = meta.max_queue_time_ms if meta.max_queue_time_explicit else meta.max_execution_time_ms
        stream = kc.request.get("stream") is True
        # No per-user quota: every client behind Kong shares its one key, and Kong limits its consumers itself.
        call = Call(self.cfg.ollama.open_ai_compatible_path, lambda m: forward_body(kc.request, m), [kc.model],
                    kc.priority, None, wait, meta.max_execution_time_ms, stream=OPENAI_SSE if stream else None,
                    failover=False, api="kong", plane=PLANE, task=kc.task_type, log=req.log, reason=KONG_CHOSE)
        return await self.runner.run(call, KongReply(self.node_id))

    async def create_job(self, req: Request, params: dict[str, str]) -> Response:
        started = time.perf_counter()
        kc = await self._parse(req, "async", started)
        try:
            job, position = self.jobs.submit(kc.request, kc.model, kc.task_type, kc.priority, req.principal.user)
        except HttpError as e:
            self.runner.count(PLANE, kc.task_type, kc.model, "async", e.status, started, api="kong", reason=e.code)
            raise
        req.log.update(mode="async", jobId=job.id)
        self.runner.count(PLANE, kc.task_type, kc.model, "async", 202, started, api="kong", reason=KONG_CHOSE)
        location = f"{self.cfg.server.base_path.rstrip('/')}/v1/jobs/{job.id}"
        body = {"id": job.id, "status": "queued", "position": position, "nodeId": self.node_id,
                "selectedModel": kc.model}
        return json_response(202, body, [("Location", location)])
