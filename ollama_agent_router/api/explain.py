"""POST /v1/router/route: the decision a request would get, with every score part, without running it.

The dry run goes through the same ``Runner.route`` as a real request (classifier, pin, ``decide``
against the live snapshot), so what it shows is what a request sent now would get. It takes the body of
any routed door: a chat completion, an Anthropic Messages request or a Responses request, told apart by
their fields (``api`` in the answer names the door whose body it read: openai, anthropic or responses).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..config.schema import Config, ModelSpec
from ..http.messages import Request, Response, json_response
from ..jsonutil import num
from ..options import RouterMeta, normalize_meta
from ..routing import IDLE, Candidate, ModelState, RoutingTable, context_reason
from ..runner import DecisionRecord, Routed, Runner
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
    """(the door whose body this is, the body, the chat-shaped conversation the classifier reads)."""
    if isinstance(body, dict) and "input" in body:
        body = responses.validate_responses(body)
        return "responses", body, responses.classifier_input(body)
    if isinstance(body, dict) and looks_like_messages(body):
        body = anthropic.validate_messages(body)
        return "anthropic", body, anthropic.classifier_input(body)
    body = validate_chat_body(body)
    return "openai", body, body


def blocked_reason(c: Candidate, state: ModelState, spec: ModelSpec, required_mb: float,
                   free_mb: float | None, context_tokens: int = 0) -> str:
    """Why a candidate cannot run now, in words an operator can act on."""
    if c.blocked == "context":
        return context_reason(context_tokens, spec.max_context)
    if c.blocked == "gpu_only":
        if free_mb is None:
            return "gpu_only: no GPU reading and no gpu.vramTotalMb, so nothing is known to fit"
        if "cpu" in state.processor and "100% gpu" not in state.processor:
            return f"gpu_only: loaded partly on the CPU ({state.processor})"
        return f"gpu_only: needs {required_mb:,.0f} MB, {max(0.0, free_mb):,.0f} MB free"
    if c.blocked == "busy":
        if spec.exclusive:
            return f"busy: exclusive, and running {state.running} request{'s' if state.running != 1 else ''}"
        return f"busy: {state.running} of {spec.max_concurrent} slots in use, and allowWhenBusy is off"
    return "cooldown: failed repeatedly upstream; it sits out router.failover.cooldownMs"


def candidate_json(c: Candidate, state: ModelState, spec: ModelSpec, required_mb: float,
                   free_mb: float | None, context_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "score": round(c.score, 1),
        "components": {name: num(round(value, 1)) for name, value in c.components},
        "vramRequiredMb": round(required_mb),
        "queued": state.waiting,
        "running": state.running,
        "loaded": state.loaded,
    }
    if state.processor:
        out["processor"] = state.processor
    if c.blocked is not None:
        out["blocked"] = c.blocked
        out["blockedReason"] = blocked_reason(c, state, spec, required_mb, free_mb, context_tokens)
    return out


def not_candidates(table: RoutingTable, meta: RouterMeta, task_type: str, candidates: set[str]) -> list[dict]:
    """The configured models this request could not get at all, and why (so none is silently left out)."""
    forbidden = {table.resolve(n) or n for n in meta.forbidden_models}
    return [{"name": name, "reason": "forbidden by router.forbiddenModels" if name in forbidden
             else f"not in the {task_type} route, purpose or tags"}
            for name in table.order if name not in candidates]


def sticky_json(routed: Routed) -> dict[str, Any]:
    """The conversation the request belongs to, as the sticky routing sees it."""
    assert routed.session is not None
    out: dict[str, Any] = {"conversation": routed.session.source, "kept": routed.decision.sticky}
    if routed.sticky is not None:
        out["model"] = routed.sticky
    if routed.decision.sticky:
        out["explanation"] = f"the conversation stays on {routed.sticky}"
    elif routed.sticky is not None:
        out["explanation"] = f"its model {routed.sticky} cannot take this turn: the turn, and the conversation, move"
    else:
        out["explanation"] = "a new conversation: the model this turn runs on becomes its own"
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
        return json_response(200, self.explain(await read_json(req), req.headers))

    def explain(self, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The decision for ``body``, sent with ``headers`` (a session header names its conversation)."""
        api, body, conversation = conversation_of(body)
        meta = normalize_meta(body.get("router"), self.cfg)
        routed = self.runner.route(conversation, meta, pinned=self.runner.pin(body.get("model")), explain=True,
                                   client=body, headers=headers)
        assert routed.record is not None  # explain=True keeps it
        out = {"api": api, **explanation(routed.record, self.table, self.cfg.gpu.vram_total_mb)}
        if routed.session is not None:
            out["sticky"] = sticky_json(routed)
        return out


def explanation(record: DecisionRecord, table: RoutingTable, vram_total_mb: float) -> dict[str, Any]:
    """A decision with every score part, against the runtime view it was made on (the live feed keeps these
    records, so a recent decision can be shown exactly as this endpoint would have shown it)."""
    cls, d = record.classification, record.decision
    states = record.view.models
    free = record.view.gpu_free_mb
    free_for_fit = free if free is not None else (vram_total_mb if vram_total_mb > 0 else None)  # what gpu_only used
    required = table.required_mb
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
        "contextTokens": record.context_tokens,
        "candidates": [candidate_json(c, states.get(c.name, IDLE), table.models[c.name], required[c.name],
                                      free_for_fit, record.context_tokens) for c in d.ranked + d.blocked],
    }
    if cls.harness:
        out["agentRequest"] = True  # read as a coding agent's: the user's ask decided, not the harness
    others = not_candidates(table, record.meta, cls.task_type, {c.name for c in d.ranked + d.blocked})
    if others:
        out["notCandidates"] = others
    if d.model is not None:
        out["selectedModel"] = d.model
    if record.pinned is not None:
        out["pinned"] = record.pinned
    if free is not None:
        out["gpuFreeMb"] = round(free)
    return out
