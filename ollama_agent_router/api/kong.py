"""Kong's runtime-agent contract (spec Part C): capabilities, runtime snapshot, execute and jobs.

Kong has already classified the request and chosen the model; this node runs it on that model's
queue, with no re-routing, and answers in the exact shapes the plugin reads. Nothing here emits JSON
null: the plugin's lua-cjson turns it into a truthy value and crashes. The two snapshot endpoints
answer from memory, because Kong drops a node that takes longer than 500 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config.schema import PRIORITIES, to_json
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jsonutil import dumps, iso_ms
from ..relay import StreamStats, relay, sse_comment
from ..routing import RouterMeta, normalize_meta
from ..scheduler import WaitTimeout
from ..service import Exchange, forward_body, validate_chat_body
from .status import plain_json
from .table import Route, read_json

if TYPE_CHECKING:
    from ..app import App

PLANE = "runtimeAgent"


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


def parse_call(app: "App", body: Any) -> KongCall:
    """Validate Kong's envelope: 400 for a malformed one, 404 for a model this node does not serve."""
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    selected = body.get("selectedModel")
    if not isinstance(selected, str) or not selected:
        raise HttpError(400, "selectedModel must be a non-empty string", code="invalid_body")
    if not isinstance(body.get("request"), dict):
        raise HttpError(400, "request must be an object holding the client's chat body", code="invalid_body")
    request = validate_chat_body(body["request"])
    meta = normalize_meta(request.get("router"), app.cfg, lenient=True)
    model = app.table.resolve(selected)
    if model is None:
        raise HttpError(404, f"Unknown configured model: {selected}", code="model_not_found")
    decision = _object(body.get("routerDecision"))
    classification = _object(body.get("classification"))
    priority = next((p for p in (body.get("priority"), decision.get("priority")) if p in PRIORITIES), meta.priority)
    task = next((t for t in (classification.get("taskType"), decision.get("taskType")) if isinstance(t, str) and t),
                app.cfg.router.default_task_type)
    return KongCall(model, request, meta, priority, task)


def capabilities_body(app: "App") -> dict:
    """C.4: static configuration, model ``tags`` included (Kong scores them)."""
    cfg = app.cfg
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


def runtime_body(app: "App") -> dict:
    """C.5, from the background snapshot; ``gpu`` is absent (never null) when there is no GPU reading."""
    rt = app.snapshot
    body: dict[str, Any] = {
        "nodeId": app.cfg.server.node_id,
        "status": rt.status,
        "timestamp": iso_ms(),
        "snapshotAgeMs": rt.snapshot_age_ms(),
        "ollama": {"baseUrl": app.cfg.ollama.base_url, "reachable": rt.ollama_reachable},
    }
    gpu = rt.gpu_json()
    if gpu is not None:
        body["gpu"] = plain_json(gpu)  # the only part with floats; the rest is ints and strings already
    body["loadedModels"] = rt.loaded_models
    body["queues"] = app.scheduler.snapshot()
    body["jobs"] = app.jobs.summary()
    return body


class KongHandlers:
    def __init__(self, app: App) -> None:
        self.app = app
        self.node_id = app.cfg.server.node_id
        self._capabilities = dumps(capabilities_body(app))

    def _observe(self, call: KongCall | None, mode: str, status: int, started: float,
                 stats: StreamStats | None = None, usage: Any = None) -> None:
        self.app.metrics.observe_request(
            PLANE, call.task_type if call else None, call.model if call else None, mode, status,
            time.perf_counter() - started, first_byte=stats.first_byte_at if stats else None,
            usage=usage or (stats.usage if stats else None), chunks=stats.chunks if stats else 0,
        )

    async def capabilities(self, req: Request, params: dict[str, str]) -> Response:
        return Response(200, self._capabilities)

    async def runtime(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, runtime_body(self.app))

    async def execute(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        started = time.perf_counter()
        call = None
        try:
            call = parse_call(self.app, await read_json(req))
            req.log.update(model=call.model, taskType=call.task_type)
            return await self._execute(call, started)
        except HttpError as e:
            self._observe(call, "sync", e.status, started)
            raise

    async def _execute(self, call: KongCall, started: float) -> Response | StreamResponse:
        app = self.app
        meta = call.meta
        limit = meta.max_execution_time_ms
        # Kong already judged the queue when it chose sync; without an explicit bound, waiting may use the run's budget.
        wait = meta.max_queue_time_ms if meta.max_queue_time_explicit else limit
        try:
            # No per-user quota: every client behind Kong shares its one key, and Kong limits its consumers itself.
            ex = await app.service.open(
                [call.model], app.cfg.ollama.open_ai_compatible_path, lambda m: forward_body(call.request, m),
                priority=call.priority, user=None, max_wait=wait / 1000, timeout_ms=limit, failover=False,
            )
        except WaitTimeout:
            raise HttpError(503, f"{call.model} has no free slot within {wait} ms", code="queue_timeout",
                            headers=[("Retry-After", "1")]) from None
        if call.request.get("stream") is True and ex.response.status < 400:
            return self._stream(call, ex, started)
        result = await app.service.read_result(ex)
        self._observe(call, "sync", 200, started, usage=result.get("usage") if isinstance(result, dict) else None)
        return json_response(200, plain_json({
            "result": result,
            "nodeId": self.node_id,
            "selectedModel": ex.model,
            "queueTimeMs": ex.queue_ms,
            "executionTimeMs": ex.execution_ms(),
        }))

    def _stream(self, call: KongCall, ex: Exchange, started: float) -> StreamResponse:
        stats = StreamStats()

        def done() -> None:
            ex.slot.release()
            self._observe(call, "stream", 200 if stats.completed and not stats.error else 502, started, stats)

        # SSE clients skip comment lines; a gateway that wants the node's facts reads them here or in the headers.
        head = {"nodeId": self.node_id, "selectedModel": ex.model, "queueTimeMs": ex.queue_ms}
        chunks = relay(ex.response, stats, lambda: time.perf_counter() - started, on_end=done)
        headers = [("X-Router-Node-Id", self.node_id), ("X-Router-Selected-Model", ex.model),
                   ("X-Router-Queue-Time-Ms", str(ex.queue_ms))]
        return StreamResponse(200, chunks, headers, prelude=sse_comment("router", head))

    async def create_job(self, req: Request, params: dict[str, str]) -> Response:
        started = time.perf_counter()
        call = None
        try:
            call = parse_call(self.app, await read_json(req))
            if call.request.get("stream") is True:
                raise HttpError(400, "stream: true cannot be combined with an async job", code="invalid_router_options")
            principal = req.principal
            job, position = self.app.jobs.submit(call.request, call.model, call.task_type, call.priority,
                                                 principal.user)
        except HttpError as e:
            self._observe(call, "async", e.status, started)
            raise
        req.log.update(model=call.model, taskType=call.task_type, mode="async", jobId=job.id)
        self._observe(call, "async", 202, started)
        location = f"{self.app.cfg.server.base_path.rstrip('/')}/v1/jobs/{job.id}"
        body = {"id": job.id, "status": job.status, "position": position, "nodeId": self.node_id,
                "selectedModel": call.model}
        return json_response(202, body, [("Location", location)])


def routes(app: "App") -> list[Route]:
    h = KongHandlers(app)
    return [
        Route("GET", "/v1/router/capabilities", PLANE, h.capabilities),
        Route("GET", "/v1/router/runtime", PLANE, h.runtime),
        Route("POST", "/v1/router/execute", PLANE, h.execute),
        Route("POST", "/v1/router/jobs", PLANE, h.create_job),
    ]
