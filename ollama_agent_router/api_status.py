"""Health, Prometheus metrics and the router's status endpoints, all served from in-memory snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from . import SERVICE
from .api import OPEN, Route
from .config_types import to_json
from .httpserver import Request, Response, json_response
from .metrics import gauge
from .upstream import UpstreamError

if TYPE_CHECKING:
    from .app import App


def configured_models(app: "App") -> list[dict]:
    return [to_json(m) for m in app.cfg.models]


def status_body(app: "App") -> dict:
    cfg = app.cfg
    body = {
        "nodeId": cfg.server.node_id,
        "service": SERVICE,
        "queue": app.scheduler.snapshot(),
    }
    gpu = app.runtime.gpu_json()
    if gpu is not None:
        body["gpu"] = gpu
    body["loadedModels"] = app.runtime.loaded_models
    body["config"] = {
        "models": len(cfg.models),
        "routes": list(cfg.routes),
        "basePath": cfg.server.base_path,
        "protocol": "https" if cfg.server.https.enabled else "http",
    }
    return body


def metrics_text(app: "App") -> str:
    sched = app.scheduler
    rt = app.runtime
    gauges: list[Iterable[str]] = [
        gauge("oar_queue_global_queued", "Requests and jobs waiting for a model slot.", [({}, sched.total_waiting)]),
        gauge("oar_queue_global_running", "Requests and jobs running upstream.", [({}, sched.total_running)]),
        gauge("oar_ollama_reachable", "1 when the last Ollama poll succeeded.", [({}, 1 if rt.ollama_reachable else 0)]),
    ]
    snap = rt.gpu_snapshot
    if snap is not None:
        if snap.vram_free_mb is not None:
            gauges.append(gauge("oar_gpu_vram_free_mb", "Free GPU memory in MiB.", [({}, snap.vram_free_mb)]))
        if snap.utilization_pct is not None:
            gauges.append(gauge("oar_gpu_utilization_pct", "GPU utilisation in percent.", [({}, snap.utilization_pct)]))
    summary = app.jobs.summary()
    gauges.append(gauge("oar_jobs", "Jobs currently retained, by status.", [
        ({"status": "queued"}, summary["queued"]),
        ({"status": "running"}, summary["running"]),
        ({"status": "succeeded"}, summary["succeededRetained"]),
        ({"status": "failed"}, summary["failedRetained"]),
        ({"status": "cancelled"}, summary["cancelledRetained"]),
        ({"status": "expired"}, summary["expiredRetained"]),
    ]))
    gauges.append(gauge("oar_model_queue_depth", "Requests waiting for each model.",
                        [({"model": name}, q.waiting) for name, q in sched.queues.items()]))
    gauges.append(gauge("oar_model_running", "Requests running on each model.",
                        [({"model": name}, q.running) for name, q in sched.queues.items()]))
    gauges.append(gauge("oar_snapshot_age_seconds", "Age of the runtime snapshot.", [({}, rt.snapshot_age_ms() / 1000)]))
    return app.metrics.render(gauges)


def routes(app: "App") -> list[Route]:
    async def health(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, {"status": "ok", "service": SERVICE})

    async def metrics(req: Request, params: dict[str, str]) -> Response:
        return Response(200, metrics_text(app).encode("utf-8"), content_type="text/plain; version=0.0.4; charset=utf-8")

    async def status(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, status_body(app))

    async def models(req: Request, params: dict[str, str]) -> Response:
        try:
            code, tags = await app.runtime.tags()
        except UpstreamError as e:
            raise e.to_http(app.cfg.ollama.base_url) from None
        body = {"configured": configured_models(app), "ollama": tags if code < 400 else {}, "loaded": app.runtime.loaded_models}
        return json_response(200, body)

    async def gpu(req: Request, params: dict[str, str]) -> Response:
        snap = app.runtime.gpu_json()
        if snap is None:
            return json_response(200, {"provider": app.cfg.gpu.provider, "available": False})
        return json_response(200, snap)

    return [
        Route("GET", "/health", OPEN, health),
        Route("GET", "/metrics", "metrics", metrics),
        Route("GET", "/v1/router/status", "runtimeAgent", status),
        Route("GET", "/v1/router/models", "runtimeAgent", models),
        Route("GET", "/v1/router/gpu", "runtimeAgent", gpu),
    ]
