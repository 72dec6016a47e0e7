"""Ollama's native generation API: ``/api/chat``, ``/api/generate`` (with the load and unload requests),
``/api/embed`` and the legacy ``/api/embeddings`` (wire-formats §1.5-1.9). NDJSON streams, Go's field rules."""

from __future__ import annotations

import json
from typing import Any

from ..http.messages import Request, Response, StreamResponse
from ..jsonutil import dumps
from .core import SimCore
from .plan import Conversation, Reply, message_text, tools_text
from .run import SimCall
from .wire import SimError, now_utc

NDJSON = "application/x-ndjson"
METRIC_KEYS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
               "eval_count", "eval_duration")


# ---- rendering --------------------------------------------------------------------------------------

def ndjson(obj: Any) -> bytes:
    return dumps(obj) + b"\n"


def native_chunk(api: str, model: str, created_at: str, kind: str, value: Any) -> dict[str, Any]:
    """One streamed ``done:false`` object for /api/chat (``api="chat"``) or /api/generate."""
    if api == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": value if kind == "content" else ""}
        if kind == "thinking":
            message["thinking"] = value
        if kind == "tool_calls":
            message["tool_calls"] = value
        return {"model": model, "created_at": created_at, "message": message, "done": False}
    out: dict[str, Any] = {"model": model, "created_at": created_at, "response": value if kind == "content" else ""}
    if kind == "thinking":
        out["thinking"] = value
    out["done"] = False
    return out


def native_final(
    api: str, model: str, created_at: str, done_reason: str, metrics: dict[str, int], *,
    content: str = "", thinking: str = "", tool_calls: list[dict[str, Any]] | None = None,
    context: list[int] | None = None,
) -> dict[str, Any]:
    """The ``done:true`` object; for non-streamed replies it carries the whole text. Zero metrics are omitted."""
    out: dict[str, Any] = {"model": model, "created_at": created_at}
    if api == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        out["message"] = message
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = done_reason
    if context:
        out["context"] = context
    out.update((k, metrics[k]) for k in METRIC_KEYS if metrics.get(k))
    return out


class NativeWriter:
    """NDJSON lines for a streamed /api/chat or /api/generate reply; a mid-stream error is one ``{"error"}`` line."""

    def __init__(self, api: str, model: str, context: list[int] | None) -> None:
        self.api = api
        self.model = model
        self.context = context

    def event(self, kind: str, value: Any) -> bytes:
        return ndjson(native_chunk(self.api, self.model, now_utc(), kind, value))

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        return [ndjson(native_final(self.api, self.model, now_utc(), reply.done_reason, metrics,
                                    context=self.context))]

    def broken(self, message: str | None) -> bytes:
        return ndjson({"error": message}) if message else b""


def native_num_predict(body: dict[str, Any]) -> int | None:
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    value = options.get("num_predict")
    return value if isinstance(value, int) and value >= 0 else None


# ---- handlers ---------------------------------------------------------------------------------------

async def chat(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    keep_alive = core.keep_alive(body)
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise SimError(400, "json: cannot unmarshal messages: expected an array of messages")
    job = await core.job(req, body, keep_alive)
    if not messages:
        return await _load_only(core, "chat", job, body)
    if not all(isinstance(m, dict) for m in messages):
        raise SimError(400, "json: cannot unmarshal messages: expected objects")
    texts = [message_text(m.get("content")) for m in messages]
    last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    conv = Conversation("".join(texts) + tools_text(body.get("tools")), last_user, body.get("tools"),
                        after_tool=messages[-1].get("role") == "tool", images=any(m.get("images") for m in messages))
    core.plan(job, conv, think=body.get("think"), num_predict=native_num_predict(body))
    job.stream = body.get("stream") is not False
    return await _generate(core, "chat", job, raw=False)


async def generate(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    keep_alive = core.keep_alive(body)
    job = await core.job(req, body, keep_alive)
    prompt = body.get("prompt")
    if not prompt:
        return await _load_only(core, "generate", job, body)
    if not isinstance(prompt, str):
        raise SimError(400, "json: cannot unmarshal prompt: expected a string")
    raw = body.get("raw") is True
    if raw and any(body.get(k) for k in ("template", "system", "context")):
        raise SimError(400, "raw mode does not support template, system, or context")
    system = body.get("system") if isinstance(body.get("system"), str) else ""
    conv = Conversation(system + prompt, prompt, images=bool(body.get("images")))
    core.plan(job, conv, think=body.get("think"), num_predict=native_num_predict(body), api="generate")
    job.stream = body.get("stream") is not False
    return await _generate(core, "generate", job, raw=raw)


async def _load_only(core: SimCore, api: str, job: SimCall, body: dict[str, Any]) -> Response:
    """The empty request: load (or, with keep_alive 0, unload) the model and answer one object."""
    raw = body.get("keep_alive")
    shown = core.default_keep_alive if raw is None else raw if isinstance(raw, str) else json.dumps(raw)
    core.keep_alive_refreshes.append((job.model.canonical, shown))
    if job.keep_alive == 0:
        core.sched.unload(job.model.canonical)
        reason = "unload"
    else:
        runner = await core.run.attach(job)
        core.sched.detach(runner)
        reason = "load"
    obj = native_final(api, job.sent, now_utc(), reason, {})
    if body.get("stream") is False:
        return Response(200, dumps(obj))
    return Response(200, ndjson(obj), content_type=NDJSON)


async def _generate(core: SimCore, api: str, job: SimCall, raw: bool) -> Response | StreamResponse:
    reply = job.reply
    assert reply is not None
    context = None if raw or api == "chat" else list(range(100, 100 + reply.prompt_tokens + reply.eval_count))
    if job.stream:
        return await core.stream(job, NativeWriter(api, job.sent, context), NDJSON)
    content, thinking, calls, metrics = await core.run.collect(job)
    obj = native_final(api, job.sent, now_utc(), reply.done_reason, metrics, content=content,
                       thinking=thinking, tool_calls=calls, context=context)
    return core.respond(job, Response(200, dumps(obj)))


# ---- embeddings -------------------------------------------------------------------------------------

async def embed(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    keep_alive = core.keep_alive(body)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if texts and (not isinstance(texts, list) or not all(isinstance(t, str) for t in texts)):
        raise SimError(400, "invalid input type")
    job = await core.job(req, body, keep_alive)
    texts = [t for t in texts or [] if t]
    if not texts:
        return Response(200, dumps({"model": job.sent, "embeddings": []}))
    vectors, metrics = await core.embed(job, texts, body.get("dimensions"), normalise=True)
    out = {"model": job.sent, "embeddings": vectors}
    out.update((k, metrics[k]) for k in ("total_duration", "load_duration", "prompt_eval_count"))
    return core.respond(job, Response(200, dumps(out)))


async def embeddings(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    """The legacy route: one ``prompt``, one unnormalised ``embedding``."""
    body = await core.body(req, call)
    keep_alive = core.keep_alive(body)
    job = await core.job(req, body, keep_alive)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return Response(200, dumps({"embedding": []}))
    vectors, _ = await core.embed(job, [prompt], None, normalise=False)
    return core.respond(job, Response(200, dumps({"embedding": vectors[0]})))
