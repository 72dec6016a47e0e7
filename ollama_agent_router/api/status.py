"""Health, Prometheus metrics and the router's status endpoints, all served from in-memory snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .. import SERVICE
from ..config.schema import to_json
from ..http.messages import Request, Response, json_response
from ..jsonutil import num
from ..metrics import CONTENT_TYPE, gauge
from ..upstream import UpstreamError
from .table import OPEN, Route

if TYPE_CHECKING:
    from ..app import App


def configured_models(app: "App") -> list[dict]:
    return [plain_json(to_json(m)) for m in app.cfg.models]


def status_body(app: "App") -> dict:
    cfg = app.cfg
    body = {
        "nodeId": cfg.server.node_id,
        "service": SERVICE,
        "queue": app.scheduler.snapshot(),
    }
    gpu = app.snapshot.gpu_json()
    if gpu is not None:
        body["gpu"] = gpu
    body["loadedModels"] = app.snapshot.loaded_models
    body["config"] = {
        "models": len(cfg.models),
        "routes": list(cfg.routes),
        "basePath": cfg.server.base_path,
        "protocol": "https" if cfg.server.https.enabled else "http",
    }
    return body


def plain_json(value: Any) -> Any:
    """``value`` without nulls (object keys omitted, array items dropped) and with integral floats as ints.

    Kong's lua-cjson turns JSON null into a truthy value, so nothing a node serves may contain one,
    not even what it relays from Ollama (``details.families`` can be null there). Integral floats
    print as JavaScript would (``sizeGb: 14``), like the original.
    """
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value if v is not None]
    if isinstance(value, float):
        return num(value)
    return value


def _jobs_by_model(app: "App") -> list[tuple[dict[str, str], float]]:
    counts: dict[tuple[str, str], int] = {}
    for job in app.jobs.jobs.values():
        key = (job.status, job.selected_model)
        counts[key] = counts.get(key, 0) + 1
    return [({"status": status, "model": model}, n) for (status, model), n in counts.items()]


def metrics_text(app: "App") -> str:
    """The exposition, from memory only: a scrape never spawns a process nor waits on Ollama.

    The original's gauges keep their names and order. Its ``oar_jobs_total`` is a gauge despite the
    counter suffix: it stays for existing dashboards, after ``oar_jobs``, the same values under a
    conventional name. The per-model split the original put under that name too is ``oar_jobs_by_model``,
    so label sets never mix within a family.
    """
    sched = app.scheduler
    rt = app.snapshot
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
    retained = [({"status": status}, summary[key]) for status, key in (
        ("queued", "queued"), ("running", "running"), ("succeeded", "succeededRetained"),
        ("failed", "failedRetained"), ("cancelled", "cancelledRetained"), ("expired", "expiredRetained"))]
    gauges.append(gauge("oar_jobs", "Jobs currently retained, by status.", retained))
    gauges.append(gauge("oar_jobs_total", "Deprecated: oar_jobs under the original's name (a gauge).", retained))
    gauges.append(gauge("oar_jobs_by_model", "Jobs currently retained, by status and model.", _jobs_by_model(app)))
    gauges.append(gauge("oar_model_queue_depth", "Requests waiting for each model.",
                        [({"model": name}, q.waiting) for name, q in sched.queues.items()]))
    gauges.append(gauge("oar_model_running", "Requests running on each model.",
                        [({"model": name}, q.running) for name, q in sched.queues.items()]))
    gauges.append(gauge("oar_model_loaded", "1 when Ollama has the model loaded.",
                        [({"model": name}, 1 if state.loaded else 0) for name, state in sched.states.items()]))
    gauges.append(gauge("oar_snapshot_age_seconds", "Age of the runtime snapshot.", [({}, rt.snapshot_age_ms() / 1000)]))
    return app.metrics.render(gauges)


def metrics_route(app: "App") -> Route:
    async def metrics(req: Request, params: dict[str, str]) -> Response:
        return Response(200, metrics_text(app).encode("utf-8"), content_type=CONTENT_TYPE)

    return Route("GET", "/metrics", "metrics", metrics)


def routes(app: "App") -> list[Route]:
    async def health(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, {"status": "ok", "service": SERVICE})

    async def status(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, status_body(app))

    async def models(req: Request, params: dict[str, str]) -> Response:
        try:
            code, tags = await app.snapshot.tags()
        except UpstreamError as e:
            raise e.to_http(app.cfg.ollama.base_url) from None
        body = {"configured": configured_models(app), "ollama": plain_json(tags) if code < 400 else {},
                "loaded": app.snapshot.loaded_models}
        return json_response(200, body)

    async def gpu(req: Request, params: dict[str, str]) -> Response:
        snap = app.snapshot.gpu_json()
        if snap is None:
            return json_response(200, {"provider": app.cfg.gpu.provider, "available": False})
        return json_response(200, snap)

    table = [
        Route("GET", "/health", OPEN, health),
        Route("GET", "/v1/router/status", "runtimeAgent", status),
        Route("GET", "/v1/router/models", "runtimeAgent", models),
        Route("GET", "/v1/router/gpu", "runtimeAgent", gpu),
    ]
    # With metrics.bind the exposition lives only on its own listener, off the public interface.
    return table if app.cfg.metrics.bind else table + [metrics_route(app)]
