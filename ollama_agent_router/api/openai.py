"""POST /v1/chat/completions: classify, route, then answer sync, stream, or accept as a job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jsonutil import completion_tokens
from ..relay import StreamStats, relay, sse_comment
from ..routing import normalize_meta
from ..scheduler import WaitTimeout
from ..service import Exchange, Routed, forward_body, validate_chat_body
from .table import Route, read_json

if TYPE_CHECKING:
    from ..app import App

ASYNC_MESSAGE = "Heavy load. Job accepted for asynchronous processing."


def _header_value(text: str) -> str:
    """Header-safe text: latin-1 only, no CR/LF, bounded."""
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")[:512]


def router_headers(router: dict) -> list[tuple[str, str]]:
    return [
        ("X-Router-Mode", router["mode"]),
        ("X-Router-Task-Type", _header_value(router["taskType"])),
        ("X-Router-Selected-Model", _header_value(router["selectedModel"])),
        ("X-Router-Fallback-Models", _header_value(",".join(router["fallbackModels"]))),
        ("X-Router-Queue-Time-Ms", str(router["queueTimeMs"])),
        ("X-Router-Decision-Reason", _header_value(router["decisionReason"])),
    ]


def accept_job(app: "App", req: Request, routed: Routed, model: str, reason: str) -> Response:
    """202 with the original's async body; the job runs the same request later on ``model``."""
    principal = req.principal
    job, position = app.jobs.submit(routed.body, model, routed.classification.task_type, routed.meta.priority,
                                    principal.user, candidates=routed.decision.failover_order())
    req.log.update(model=model, mode="async", jobId=job.id)
    body = {
        "id": job.id,
        "object": "router.job",
        "status": job.status,
        "message": ASYNC_MESSAGE,
        "router": {
            "mode": "async",
            "taskType": routed.classification.task_type,
            "preferredModel": model,
            "position": position,
            "estimatedClass": routed.classification.complexity,
            "decisionReason": reason,
        },
    }
    app.service.record("standalone", routed, model, "async", 202, 0.0)
    return json_response(202, body, [("Location", f"{app.cfg.server.base_path.rstrip('/')}/v1/jobs/{job.id}")])


async def run_routed(app: "App", req: Request, routed: Routed, stream: bool) -> Response | StreamResponse:
    """Run a decided request now: sync JSON, or an SSE relay when ``stream``."""
    service = app.service
    meta = routed.meta
    decision = routed.decision
    principal = req.principal
    started = time.perf_counter()
    models = [decision.model] + decision.failover_order()
    try:
        ex = await service.open(
            models, app.cfg.ollama.open_ai_compatible_path, lambda m: forward_body(routed.body, m),
            priority=meta.priority, user=principal.user, max_wait=meta.max_queue_time_ms / 1000,
            timeout_ms=meta.max_execution_time_ms,
        )
    except WaitTimeout:
        if not stream and meta.allow_async and meta.mode != "sync":
            return accept_job(app, req, routed, decision.model or models[0],
                              f"Queue wait would exceed {meta.max_queue_time_ms} ms; accepted for async processing")
        raise HttpError(503, f"{decision.model} has no free slot within {meta.max_queue_time_ms} ms",
                        code="queue_timeout", headers=[("Retry-After", "1")]) from None
    req.log["model"] = ex.model
    if stream and ex.response.status < 400:
        return _stream(app, req, routed, ex, started)
    raw = await service.read_raw(ex)
    router = service.router_object(routed, ex)
    tokens = completion_tokens(raw)
    service.record(principal.plane or "standalone", routed, ex.model, "sync", 200, time.perf_counter() - started,
                   usage={"completion_tokens": tokens} if tokens is not None else None)
    return Response(200, service.with_router(raw, router), router_headers(router))


def _stream(app: "App", req: Request, routed: Routed, ex: Exchange, started: float) -> StreamResponse:
    router = app.service.router_object(routed, ex)
    stats = StreamStats()
    plane = req.principal.plane or "standalone"

    def done() -> None:
        ex.slot.release()
        status = 200 if stats.completed and not stats.error else 502
        app.service.record(plane, routed, ex.model, "stream", status, time.perf_counter() - started, stats)

    chunks = relay(ex.response, stats, lambda: time.perf_counter() - started, on_end=done)
    return StreamResponse(200, chunks, router_headers(router), prelude=sse_comment("router", router))


async def chat_completions(app: "App", req: Request, params: dict[str, str]) -> Response | StreamResponse:
    body = validate_chat_body(await read_json(req))
    stream = body.get("stream") is True
    meta = normalize_meta(body.get("router"), app.cfg)
    if stream:
        if meta.mode == "async":
            raise HttpError(400, "stream: true cannot be combined with router.mode async", code="invalid_router_options")
        meta = meta._replace(allow_async=False)  # a streaming client waits for its stream
    routed = app.service.route(body, meta, pinned=app.service.pin(body.get("model")))
    decision = routed.decision
    req.log["taskType"] = routed.classification.task_type
    if decision.action == "reject":
        app.service.record("standalone", routed, None, "reject", 503, 0.0)
        raise HttpError(503, decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
    if decision.action == "async":
        return accept_job(app, req, routed, decision.model or "", decision.reason)
    return await run_routed(app, req, routed, stream)


def routes(app: "App") -> list[Route]:
    async def chat(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await chat_completions(app, req, params)

    return [Route("POST", "/v1/chat/completions", "standalone", chat)]
