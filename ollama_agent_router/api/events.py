"""The live feed: ``GET /v1/router/events`` (Server-Sent Events), read by the dashboard and ``oar top``, and
``GET /v1/router/decisions/{id}``: a recent decision explained as ``/v1/router/route`` would have.

Every event is one ``event:`` name and one JSON object on ``data:``:

- ``hello``: on connect, and again after frames were dropped: all a viewer needs to draw from scratch (the
  node, the runtime snapshot, the ``state`` below, the last decisions and the newest jobs);
- ``decision``: one answered request (door, task type, model, mode, queue wait, duration, status, reason);
- ``job``: a job changed state;
- ``runtime``: the background snapshot changed (GPU memory, loaded models, Ollama's reachability);
- ``state``: each second: the model table, queue and job counts, running jobs' progress, last-minute rates;
- ``dropped``: this reader fell behind and lost ``dropped`` frames in all; a ``hello`` follows.

Everything comes from the in-memory state that status and metrics read; nothing waits on Ollama. Access is
the plane ``ui.plane`` names (runtimeAgent, like ``/v1/router/status``, unless set to admin).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from .. import __version__
from ..config.schema import Config
from ..errors import HttpError
from ..events import EventHub, Subscriber, sse_frame
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jobs import JobManager
from ..metrics import Metrics
from ..residency import Residency
from ..routing import RoutingTable
from ..scheduler import Scheduler
from ..snapshot import Snapshot
from .explain import explanation
from .table import Route

TICK_S = 1.0  # how often the state event goes out
BATCH_S = 0.05  # a burst of events is gathered this long into one write
HELLO_JOBS = 50
RETRY = b"retry: 2000\n\n"  # EventSource-style readers reconnect after 2 s


class FeedRoutes:
    def __init__(self, cfg: Config, hub: EventHub, scheduler: Scheduler, snapshot: Snapshot, jobs: JobManager,
                 metrics: Metrics, residency: Residency, table: RoutingTable) -> None:
        self.cfg = cfg
        self.hub = hub
        self.scheduler = scheduler
        self.snapshot = snapshot
        self.jobs = jobs
        self.metrics = metrics
        self.residency = residency
        self.table = table

    def routes(self) -> list[Route]:
        plane = self.cfg.ui.plane
        return [Route("GET", "/v1/router/events", plane, self.stream),
                Route("GET", "/v1/router/decisions/{id}", plane, self.explain)]

    # ---- the stream ---------------------------------------------------------------------------------
    async def stream(self, req: Request, params: dict[str, str]) -> StreamResponse:
        hub = self.hub
        if hub.closed or len(hub.subscribers) >= hub.max_subscribers:
            raise HttpError(503, "The live feed has as many readers as it takes", code="feed_busy",
                            headers=[("Retry-After", "5")])
        # The subscription starts inside the body, whose end (any end) removes it again.
        return StreamResponse(200, self._frames(), [("X-Accel-Buffering", "no")])

    async def _frames(self) -> AsyncIterator[bytes]:
        sub = self.hub.subscribe()
        if sub is None:
            return
        try:
            yield RETRY + sse_frame("hello", self.hello())
            async for chunk in self._follow(sub):
                yield chunk
        finally:
            self.hub.unsubscribe(sub)

    async def _follow(self, sub: Subscriber) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        told = 0
        next_tick = loop.time() + TICK_S
        while True:
            await sub.wait(next_tick - loop.time())
            if sub.closed:
                return
            if sub.frames:
                await asyncio.sleep(BATCH_S)
            frames = sub.take()
            if sub.dropped != told:
                # What was dropped is lost, but a fresh hello holds everything it changed.
                told = sub.dropped
                frames = [sse_frame("dropped", {"dropped": told}), sse_frame("hello", self.hello())]
            if loop.time() >= next_tick:
                frames.append(sse_frame("state", self.state()))
                next_tick = loop.time() + TICK_S
            if frames:
                yield b"".join(frames)

    # ---- what the events hold -----------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "node": cfg.server.node_id,
            "version": __version__,
            "gpuProvider": cfg.gpu.provider,
            "reserveMb": cfg.gpu.vram_safety_reserve_mb,
            "runtime": self.snapshot.runtime_json(),
            "state": self.state(),
            "decisions": [data for _, data, _ in self.hub.decisions],
            "jobs": [self.jobs.event(job).to_json() for job in self.jobs.page(HELLO_JOBS)[0]],
        }

    def state(self) -> dict[str, Any]:
        sched = self.scheduler
        return {
            "at": int(time.time() * 1000),
            "models": self.models(),
            "queue": {"queued": sched.total_waiting, "running": sched.total_running},
            "jobs": {**self.jobs.summary(), "progress": self.progress()},
            "rates": self.metrics.recent.summary(),
        }

    def models(self) -> list[dict[str, Any]]:
        """One row per configured model: loaded or not, VRAM, running, queued by priority, cooldown, last use."""
        vram: dict[str, int] = {}
        for m in self.snapshot.loaded_models:
            name = self.table.resolve(m["name"])
            if name is not None and "sizeVramBytes" in m:
                vram[name] = m["sizeVramBytes"] // (1024 * 1024)
        states = self.scheduler.states
        rows = []
        for entry in self.scheduler.snapshot()["byModel"]:
            name = entry["model"]
            state = states[name]
            last = self.residency.last_used.get(name)
            rows.append({
                "name": name,
                "loaded": state.loaded,
                "processor": state.processor,
                "vramMb": vram.get(name),
                "sizeMb": round(self.table.models[name].size_gb * 1024),
                "running": entry["running"],
                "maxConcurrent": entry["concurrency"],
                "queued": self.scheduler.waiting_by_priority(name),
                "cooldownMs": entry.get("cooldownRemainingMs"),
                "lastUsed": None if last is None else int(last * 1000),
            })
        return rows

    def progress(self) -> list[dict[str, Any]]:
        """Running jobs: elapsed time, and the tokens generated so far as an estimate (the job reads its reply
        whole, so the count is the elapsed time at the model's measured average speed; None before the model
        has a measured reply)."""
        now = self.jobs.clock()
        out = []
        for job_id, began in self.jobs.running.items():
            job = self.jobs.jobs[job_id]
            elapsed = max(0.0, now - began)
            rate = self.metrics.mean_tokens_per_second(job.selected_model)
            out.append({"id": job_id, "model": job.selected_model, "elapsedMs": int(elapsed * 1000),
                        "tokens": None if rate is None else int(elapsed * rate), "tokensEstimated": True})
        return out

    # ---- a decision's explanation -------------------------------------------------------------------
    async def explain(self, req: Request, params: dict[str, str]) -> Response:
        text = params["id"]
        kept = self.hub.decision(int(text)) if text.isdigit() and len(text) < 19 else None
        if kept is None:
            raise HttpError(404, "No recent decision has this id", code="decision_not_found")
        record = kept[1]
        if record is None:
            raise HttpError(404, "This decision has no explanation: it was not routed here, or nobody was "
                            "watching the feed when it was made", code="explanation_not_kept")
        return json_response(200, {"api": kept[0]["api"], **explanation(record, self.table, self.cfg.gpu.vram_total_mb)})
