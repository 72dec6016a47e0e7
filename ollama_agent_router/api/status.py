"""Health, Prometheus metrics and the router's status endpoints, all served from in-memory snapshots."""

from __future__ import annotations

from typing import Iterable

from .. import SERVICE
from ..config.schema import Config, to_json
from ..http.messages import Request, Response, json_response
from ..jobs import JobManager
from ..metrics import CONTENT_TYPE, Metrics, gauge
from ..scheduler import Scheduler
from ..sessions import Sessions
from ..snapshot import Snapshot
from ..upstream import UpstreamError
from .render import plain_json
from .table import OPEN, Route


def _jobs_by_model(jobs: JobManager) -> list[tuple[dict[str, str], float]]:
    """The original's per-model series: each (status, model) pair in first-seen order, newest job first."""
    counts: dict[tuple[str, str], int] = {}
    for job in reversed(jobs.jobs.values()):
        key = (job.status, job.selected_model)
        counts[key] = counts.get(key, 0) + 1
    return [({"status": status, "model": model}, n) for (status, model), n in counts.items()]


class StatusRoutes:
    """Health, Prometheus metrics and the router's status endpoints, all served from in-memory snapshots."""

    def __init__(self, cfg: Config, scheduler: Scheduler, snapshot: Snapshot, jobs: JobManager,
                 metrics: Metrics, sessions: Sessions) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.scheduler = scheduler
        self.snapshot = snapshot
        self.jobs = jobs
        self.metrics = metrics

    def routes(self) -> list[Route]:
        table = [
            Route("GET", "/health", OPEN, self.health),
            Route("GET", "/v1/router/status", "runtimeAgent", self.status),
            Route("GET", "/v1/router/models", "runtimeAgent", self.models),
            Route("GET", "/v1/router/gpu", "runtimeAgent", self.gpu),
        ]
        # With metrics.bind the exposition lives only on its own listener, off the public interface.
        return table if self.cfg.metrics.bind else table + [self.metrics_route()]

    def metrics_route(self) -> Route:
        return Route("GET", "/metrics", "metrics", self.exposition)

    def status_body(self) -> dict:
        cfg = self.cfg
        body = {
            "nodeId": cfg.server.node_id,
            "service": SERVICE,
            "ollama": {"reachable": self.snapshot.ollama_reachable},  # beyond the original: `oar status` says so
            "queue": self.scheduler.snapshot(),
            # Beyond the original: the agent conversations kept on their model (router.sticky).
            "stickyConversations": len(self.sessions),
        }
        gpu = self.snapshot.gpu_json()
        if gpu is not None:
            body["gpu"] = gpu
        body["loadedModels"] = self.snapshot.loaded_models
        body["config"] = {
            "models": len(cfg.models),
            "routes": list(cfg.routes),
            "basePath": cfg.server.base_path,
            "protocol": "https" if cfg.server.https.enabled else "http",
        }
        return body

    def metrics_text(self) -> str:
        """The exposition, from memory only: a scrape never spawns a process nor waits on Ollama.

        The original's gauges keep their names and order. Its ``oar_jobs_total`` is a gauge despite the
        counter suffix, with totals by status and then a series per (status, model): it stays exactly so for
        the original's dashboards, after ``oar_jobs``, the totals under a conventional name.
        """
        sched = self.scheduler
        rt = self.snapshot
        gauges: list[Iterable[str]] = [
            gauge("oar_queue_global_queued", "Requests and jobs waiting for a model slot.", [({}, sched.total_waiting)]),
            gauge("oar_queue_global_running", "Requests and jobs running upstream.", [({}, sched.total_running)]),
            gauge("oar_ollama_reachable", "1 when the last Ollama poll succeeded.",
                  [({}, 1 if rt.ollama_reachable else 0)]),
        ]
        snap = rt.gpu_snapshot
        if snap is not None:
            if snap.vram_free_mb is not None:
                gauges.append(gauge("oar_gpu_vram_free_mb", "Free GPU memory in MiB.", [({}, snap.vram_free_mb)]))
            if snap.utilization_pct is not None:
                gauges.append(gauge("oar_gpu_utilization_pct", "GPU utilisation in percent.",
                                    [({}, snap.utilization_pct)]))
        summary = self.jobs.summary()
        retained = [({"status": status}, summary[key]) for status, key in (
            ("queued", "queued"), ("running", "running"), ("succeeded", "succeededRetained"),
            ("failed", "failedRetained"), ("cancelled", "cancelledRetained"), ("expired", "expiredRetained"))]
        gauges.append(gauge("oar_jobs", "Jobs currently retained, by status.", retained))
        gauges.append(gauge("oar_jobs_total", "The original's job gauge: oar_jobs, then by status and model.",
                            retained + _jobs_by_model(self.jobs)))
        gauges.append(gauge("oar_model_queue_depth", "Requests waiting for each model.",
                            [({"model": name}, q.waiting) for name, q in sched.queues.items()]))
        gauges.append(gauge("oar_model_running", "Requests running on each model.",
                            [({"model": name}, q.running) for name, q in sched.queues.items()]))
        gauges.append(gauge("oar_model_loaded", "1 when Ollama has the model loaded.",
                            [({"model": name}, 1 if state.loaded else 0) for name, state in sched.states.items()]))
        gauges.append(gauge("oar_sticky_conversations", "Agent conversations kept on their model (router.sticky).",
                            [({}, len(self.sessions))]))
        gauges.append(gauge("oar_snapshot_age_seconds", "Age of the runtime snapshot.",
                            [({}, rt.snapshot_age_ms() / 1000)]))
        return self.metrics.render(gauges)

    async def exposition(self, req: Request, params: dict[str, str]) -> Response:
        return Response(200, self.metrics_text().encode("utf-8"), content_type=CONTENT_TYPE)

    async def health(self, req: Request, params: dict[str, str]) -> Response:
        """Liveness: always 200 while the process answers. The body says ``degraded``, and why, when Ollama
        or the GPU monitor is not answering (a load balancer can read it; a liveness probe need not)."""
        problems = self.snapshot.problems()
        if not problems:
            return json_response(200, {"status": "ok", "service": SERVICE})
        return json_response(200, {"status": "degraded", "service": SERVICE, "reason": "; ".join(problems)})

    async def status(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, self.status_body())

    async def models(self, req: Request, params: dict[str, str]) -> Response:
        try:
            code, tags = await self.snapshot.tags()
        except UpstreamError as e:
            raise e.to_http(self.snapshot.client.display_url) from None
        body = {"configured": [plain_json(to_json(m)) for m in self.cfg.models],
                "ollama": plain_json(tags) if code < 400 else {}, "loaded": self.snapshot.loaded_models}
        return json_response(200, body)

    async def gpu(self, req: Request, params: dict[str, str]) -> Response:
        snap = self.snapshot.gpu_json()
        if snap is None:
            return json_response(200, {"provider": self.cfg.gpu.provider, "available": False})
        return json_response(200, snap)
