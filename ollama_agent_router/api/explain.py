"""POST /v1/router/route: the decision a request would get, with every score part, without running it.

The dry run goes through the same ``Service.route`` as a real request (classifier, pin, ``decide``
against the live snapshot), so what it shows is what a request sent now would get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..http.messages import Request, Response, json_response
from ..jsonutil import num
from ..routing import Candidate, ModelState, normalize_meta
from ..service import validate_chat_body
from .table import Route, read_json

if TYPE_CHECKING:
    from ..app import App


def candidate_json(c: Candidate, state: ModelState, required_mb: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "score": round(c.score, 3),
        "components": {name: num(round(value, 3)) for name, value in c.components},
        "vramRequiredMb": num(required_mb),
        "queued": state.waiting,
        "running": state.running,
        "loaded": state.loaded,
    }
    if state.processor:
        out["processor"] = state.processor
    if c.blocked is not None:
        out["blocked"] = c.blocked
    return out


def explain(app: "App", body: Any) -> dict[str, Any]:
    body = validate_chat_body(body)
    service = app.service
    meta = normalize_meta(body.get("router"), app.cfg)
    routed = service.route(body, meta, pinned=service.pin(body.get("model")), explain=True)
    cls, d = routed.classification, routed.decision
    states = app.scheduler.states
    required = app.table.required_mb
    out: dict[str, Any] = {
        "taskType": cls.task_type,
        "explicitTaskType": cls.explicit,
        "complexity": cls.complexity,
        "confidence": round(cls.confidence, 3),
        "markers": list(cls.signals),
        "tokenEstimate": cls.token_estimate,
        "requiresLargeContext": cls.requires_large_context,
        "requiresToolUse": cls.requires_tool_use,
        "mode": d.action,
        "reason": d.reason,
        "heavyLoad": d.heavy_load,
        "candidates": [candidate_json(c, states[c.name], required[c.name]) for c in d.ranked + d.blocked],
    }
    if d.model is not None:
        out["selectedModel"] = d.model
    if routed.pinned is not None:
        out["pinned"] = routed.pinned
    free = app.snapshot.gpu_free_mb
    if free is not None:
        out["gpuFreeMb"] = num(free)
    return out


def routes(app: "App") -> list[Route]:
    async def route(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, explain(app, await read_json(req)))

    # "jobs" is the gate both public planes share: a standalone or a runtimeAgent key may ask.
    return [Route("POST", "/v1/router/route", "jobs", route)]
