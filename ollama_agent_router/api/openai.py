"""The OpenAI-compatible door: ``/v1/chat/completions`` (routed: answered now, streamed, or accepted as
a job), ``/v1/models``, and ``/v1/embeddings`` and ``/v1/completions`` (pinned or first capable model)."""

from __future__ import annotations

import time
from typing import Any

from ..config.schema import Config
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jobs import JobManager
from ..options import normalize_meta
from ..relay import OPENAI_SSE
from ..routing import RoutingTable
from ..runner import Call, Routed, Runner, forward_body
from .bodies import read_json, validate_chat_body
from .forwarded import forwarded
from .render import routed_reply
from .table import Route

REQUESTED = "Request explicitly requested async mode"
PREFER_ASYNC = "respond-async"  # RFC 7240
AUTO = "auto"
PLANE = "standalone"


def owned_by(name: str) -> str:
    """The namespace Ollama reports as ``owned_by``: ``library`` for official models, else the user part."""
    parts = name.split("/")
    return "library" if len(parts) == 1 else parts[-2]


def model_entry(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created,
            "owned_by": "ollama-agent-router" if name == AUTO else owned_by(name)}


def prefers_async(req: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240 §4.1): the client can take a 202 and fetch the result later."""
    prefer = req.headers.get("prefer")
    return prefer is not None and PREFER_ASYNC in (p.strip().lower() for p in prefer.split(","))


class OpenAIDoor:
    def __init__(self, cfg: Config, runner: Runner, jobs: JobManager, table: RoutingTable) -> None:
        self.cfg = cfg
        self.runner = runner
        self.jobs = jobs
        self.table = table
        self.started = int(time.time())
        self.v1 = cfg.ollama.open_ai_compatible_path.removesuffix("/chat/completions")

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/chat/completions", PLANE, self.chat),
            Route("GET", "/v1/models", PLANE, self.list_models),
            Route("GET", "/v1/models/{id}", PLANE, self.get_model),
            Route("GET", "/v1/models/{owner}/{id}", PLANE, self.get_model),  # a namespaced name, slash unencoded
            Route("POST", "/v1/embeddings", PLANE, self.embeddings),
            Route("POST", "/v1/completions", PLANE, self.completions),
        ]

    # ---- chat completions -------------------------------------------------------------------------
    async def chat(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        started = time.perf_counter()
        plane = req.principal.plane or PLANE
        try:
            body = validate_chat_body(await read_json(req))
            stream = body.get("stream") is True
            meta = normalize_meta(body.get("router"), self.cfg, prefer_async=prefers_async(req))
            if stream:
                if meta.mode == "async":
                    raise HttpError(400, "stream: true cannot be combined with router.mode async",
                                    code="invalid_router_options")
                meta = meta._replace(allow_async=False)  # a streaming client waits for its stream
            routed = self.runner.route(body, meta, pinned=self.runner.pin(body.get("model")), headers=req.headers)
        except HttpError as e:
            self.runner.count(plane, None, None, "sync", e.status, started, api="openai", reason=e.code)
            raise
        decision = routed.decision
        task = req.log["taskType"] = routed.classification.task_type
        if decision.action == "reject":
            self.runner.count(plane, task, None, "reject", 503, started, api="openai", reason=decision.reason,
                              record=routed.record)
            raise HttpError(503, decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
        if decision.action == "async":
            return self.accept(req, routed, decision.model or "", decision.reason)
        can_go_async = meta.can_go_async and not stream
        call = Call(self.cfg.ollama.open_ai_compatible_path, lambda m: forward_body(body, m), routed.models(),
                    meta.priority, req.principal.user, meta.wait_ms(can_go_async), meta.max_execution_time_ms,
                    stream=OPENAI_SSE if stream else None, plane=plane, task=task, log=req.log,
                    reason=decision.reason, record=routed.record, session=routed.session)
        fallback = None
        if can_go_async:
            reason = f"Queue wait would exceed {meta.max_queue_time_ms} ms; accepted for async processing"
            fallback = lambda: self.accept(req, routed, routed.models()[0], reason)  # noqa: E731
        return await self.runner.run(call, routed_reply(routed), fallback)

    def accept(self, req: Request, routed: Routed, model: str, reason: str) -> Response:
        """202 with the original's async body; the job runs the same request later on ``model``."""
        started = time.perf_counter()
        cls = routed.classification
        job, position = self.jobs.submit(routed.body, model, cls.task_type, routed.meta.priority,
                                         req.principal.user, candidates=routed.decision.failover_order())
        req.log.update(model=model, mode="async", jobId=job.id)
        requested = reason == REQUESTED or (prefers_async(req) and routed.meta.mode != "sync")
        body = {
            "id": job.id,
            "object": "router.job",
            "status": "queued",  # the state it was accepted in, even if it has started since
            "message": "Job accepted for asynchronous processing, as requested." if requested
            else "Heavy load. Job accepted for asynchronous processing.",
            "router": {"mode": "async", "taskType": cls.task_type, "preferredModel": model, "position": position,
                       "estimatedClass": cls.complexity, "decisionReason": reason},
        }
        self.runner.count(req.principal.plane or PLANE, cls.task_type, model, "async", 202, started, api="openai",
                          reason=reason, record=routed.record)
        headers = [("Location", f"{self.cfg.server.base_path.rstrip('/')}/v1/jobs/{job.id}")]
        if prefers_async(req):
            headers.append(("Preference-Applied", PREFER_ASYNC))
        return json_response(202, body, headers)

    # ---- models ------------------------------------------------------------------------------------
    async def list_models(self, req: Request, params: dict[str, str]) -> Response:
        names = [AUTO] + [m.name for m in self.cfg.models]
        return json_response(200, {"object": "list", "data": [model_entry(n, self.started) for n in names]})

    async def get_model(self, req: Request, params: dict[str, str]) -> Response:
        wanted = "/".join(params[k] for k in ("owner", "id") if k in params)
        if wanted != AUTO and self.table.resolve(wanted) is None:
            raise HttpError(404, f"The model '{wanted}' does not exist", code="model_not_found")
        return json_response(200, model_entry(wanted, self.started))

    # ---- embeddings and text completions -----------------------------------------------------------
    async def embeddings(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await forwarded(self.runner, self.cfg, req, f"{self.v1}/embeddings", embedding=True, api="openai")

    async def completions(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await forwarded(self.runner, self.cfg, req, f"{self.v1}/completions", embedding=False, api="openai")
