"""Replies the doors share: the ``router`` object that says which model ran and why, in the body, in
``X-Router-*`` headers and in a leading SSE comment; and JSON without nulls for Kong."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from ..jsonutil import add_member, dumps, num
from ..relay import sse_comment
from ..runner import Exchange, Routed
from ..upstream import json_or_raw


def header_value(text: str) -> str:
    """Header-safe text: latin-1 only, no CR/LF, bounded."""
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")[:512]


def router_headers(router: dict) -> list[tuple[str, str]]:
    return [
        ("X-Router-Mode", router["mode"]),
        ("X-Router-Task-Type", header_value(router["taskType"])),
        ("X-Router-Selected-Model", header_value(router["selectedModel"])),
        ("X-Router-Fallback-Models", header_value(",".join(router["fallbackModels"]))),
        ("X-Router-Queue-Time-Ms", str(router["queueTimeMs"])),
        ("X-Router-Decision-Reason", header_value(router["decisionReason"])),
    ] + ([("X-Router-Sticky", "true")] if router.get("sticky") else [])


def router_object(routed: Routed, ex: Exchange | None, mode: str = "sync") -> dict:
    """The original's ``router`` object for a routed request (``ex`` is None before it ran)."""
    d = routed.decision
    cls = routed.classification
    model = ex.model if ex is not None else d.model
    reason = d.reason
    if ex is not None and model != d.model:
        failed = ", ".join(f"{a.model} ({a.outcome})" for a in ex.attempts if a.model != model)
        reason = f"Failed over to {model} after {failed}; originally: {d.reason}"
    skipped = [f"{c.name} ({c.blocked})" for c in d.blocked]
    if skipped:
        reason += "; skipped: " + ", ".join(skipped)
    if cls.signals and not cls.explicit:
        reason += "; signals: " + ", ".join(cls.signals)
    obj: dict[str, Any] = {
        "mode": mode,
        "taskType": cls.task_type,
        "selectedModel": model,
        "fallbackModels": [c for c in d.candidates if c != model],
        "queueTimeMs": ex.queue_ms if ex else 0,
        "executionTimeMs": ex.execution_ms() if ex else 0,
        "decisionReason": reason,
        "complexity": cls.complexity,
        "confidence": round(cls.confidence, 3),
    }
    if routed.pinned is not None:
        obj["pinned"] = True
    if d.sticky and model == d.model:
        obj["sticky"] = True  # the conversation stayed on its model
    attempts = ex.attempts_json() if ex is not None else None
    if attempts:
        obj["attempts"] = attempts
    if routed.meta.explain:
        obj["candidates"] = [{"name": c.name, "score": round(c.score, 3)} for c in d.ranked] + [
            {"name": c.name, "score": round(c.score, 3), "blocked": c.blocked} for c in d.blocked
        ]
    return obj


def with_router(raw: bytes, router: dict) -> bytes:
    """The upstream reply with the ``router`` object added at the top level (the original's shape: a
    non-object reply becomes ``{"result": ...}``). Spliced in when the reply is an object."""
    spliced = add_member(raw, "router", router)
    if spliced is not None:
        return spliced
    result = json_or_raw(raw)
    out = dict(result) if isinstance(result, dict) else {"result": result}
    out["router"] = router
    return dumps(out)


class RouterReply:
    """A ``Renderer`` for the OpenAI- and Ollama-shaped doors: the reply with its ``router`` object, the
    same object in ``X-Router-*`` headers, and on SSE streams in a leading comment line (SSE clients skip
    comments; NDJSON and named-event streams have none, so ``comment`` is off there)."""

    def __init__(self, describe: Callable[[Exchange], dict], *, comment: bool = True) -> None:
        self.describe = describe
        self.comment = comment
        self._for: Exchange | None = None
        self._router: dict = {}

    def router(self, ex: Exchange) -> dict:
        if self._for is not ex:  # one description per exchange, shared by its headers and body
            self._for, self._router = ex, self.describe(ex)
        return self._router

    def headers(self, ex: Exchange) -> list[tuple[str, str]]:
        return router_headers(self.router(ex))

    def prelude(self, ex: Exchange) -> bytes:
        return sse_comment("router", self.router(ex)) if self.comment else b""

    def body(self, raw: bytes, ex: Exchange) -> bytes:
        return with_router(raw, self.router(ex))


def routed_reply(routed: Routed, *, comment: bool = True) -> RouterReply:
    return RouterReply(partial(router_object, routed), comment=comment)


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
