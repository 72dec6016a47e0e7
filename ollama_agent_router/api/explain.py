"""POST /v1/router/route: the decision a request would get, with every score part, without running it.

The dry run goes through the same ``Runner.route`` as a real request (classifier, pin, ``decide``
against the live snapshot), so what it shows is what a request sent now would get. It takes the body of
any routed door: a chat completion, an Anthropic Messages request or a Responses request, told apart by
their fields (``api`` in the answer says how the body was read).
"""

from __future__ import annotations

from typing import Any

from ..config.schema import Config
from ..http.server import Request, Response, json_response
from ..jsonutil import num
from ..routing import Candidate, ModelState, RoutingTable, normalize_meta
from ..runner import Runner
from ..scheduler import Scheduler
from ..snapshot import Snapshot
from . import anthropic, responses
from .bodies import read_json, validate_chat_body
from .table import Route

_ANTHROPIC_BLOCKS = frozenset({"tool_use", "tool_result"})


def looks_like_messages(body: dict) -> bool:
    """An Anthropic Messages body: a top-level ``system``, tools with an ``input_schema``, or tool blocks in
    the messages. A chat completion has none of these."""
    if "system" in body:
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict) and any(b.get("type") in _ANTHROPIC_BLOCKS for b in anthropic.content_blocks(m.get("content")))
        for m in messages)


def conversation_of(body: Any) -> tuple[str, dict, dict]:
    """(how the body was read, the body, the chat-shaped conversation the classifier reads)."""
    if isinstance(body, dict) and "input" in body:
        body = responses.validate_responses(body)
        return "responses", body, responses.classifier_input(body)
    if isinstance(body, dict) and looks_like_messages(body):
        body = anthropic.validate_messages(body)
        return "messages", body, anthropic.classifier_input(body)
    body = validate_chat_body(body)
    return "chat", body, body


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
    def __init__(self, cfg: Config, runner: Runner, table: RoutingTable, scheduler: Scheduler,
                 snapshot: Snapshot) -> None:
        self.cfg = cfg
        self.runner = runner
        self.table = table
        self.scheduler = scheduler
        self.snapshot = snapshot

    def routes(self) -> list[Route]:
        # "jobs" is the gate both public planes share: a standalone or a runtimeAgent key may ask.
        return [Route("POST", "/v1/router/route", "jobs", self.route)]

    async def route(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, self.explain(await read_json(req)))

    def explain(self, body: Any) -> dict[str, Any]:
        api, body, conversation = conversation_of(body)
        meta = normalize_meta(body.get("router"), self.cfg)
        routed = self.runner.route(conversation, meta, pinned=self.runner.pin(body.get("model")), explain=True)
        cls, d = routed.classification, routed.decision
        states = self.scheduler.states
        required = self.table.required_mb
        out: dict[str, Any] = {
            "api": api,
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
        free = self.snapshot.gpu_free_mb
        if free is not None:
            out["gpuFreeMb"] = num(free)
        return out
