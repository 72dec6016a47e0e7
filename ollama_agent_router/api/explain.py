"""POST /v1/router/route: the decision a request would get, with every score part, without running it.

The dry run goes through the same ``Runner.route`` as a real request (classifier, pin, ``decide``
against the live snapshot), so what it shows is what a request sent now would get.
"""

from __future__ import annotations

from typing import Any

from ..config.schema import Config
from ..http.server import Request, Response, json_response
from ..jsonutil import num
from ..routing import IDLE, Candidate, ModelState, RoutingTable, normalize_meta
from ..runner import DecisionRecord, Runner
from .bodies import read_json, validate_chat_body
from .table import Route


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


class Explainer:
    def __init__(self, cfg: Config, runner: Runner, table: RoutingTable) -> None:
        self.cfg = cfg
        self.runner = runner
        self.table = table

    def routes(self) -> list[Route]:
        # "jobs" is the gate both public planes share: a standalone or a runtimeAgent key may ask.
        return [Route("POST", "/v1/router/route", "jobs", self.route)]

    async def route(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, self.explain(await read_json(req)))

    def explain(self, body: Any) -> dict[str, Any]:
        body = validate_chat_body(body)
        meta = normalize_meta(body.get("router"), self.cfg)
        routed = self.runner.route(body, meta, pinned=self.runner.pin(body.get("model")), explain=True)
        assert routed.record is not None  # explain=True keeps it
        return explanation(routed.record, self.table.required_mb)


def explanation(record: DecisionRecord, required: dict[str, float]) -> dict[str, Any]:
    """A decision with every score part, against the runtime view it was made on (the live feed keeps these
    records, so a recent decision can be shown exactly as this endpoint would have shown it)."""
    cls, d = record.classification, record.decision
    states = record.view.models
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
        "candidates": [candidate_json(c, states.get(c.name, IDLE), required[c.name]) for c in d.ranked + d.blocked],
    }
    if d.model is not None:
        out["selectedModel"] = d.model
    if record.pinned is not None:
        out["pinned"] = record.pinned
    free = record.view.gpu_free_mb
    if free is not None:
        out["gpuFreeMb"] = num(free)
    return out
