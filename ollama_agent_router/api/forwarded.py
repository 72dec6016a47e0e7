"""Embeddings and text completions, on both doors: they are not classified but go to the model the client
pinned, else to the first configured model able to serve them (embedding models are the ones labelled so
in ``purpose`` or ``tags``; every other model completes text)."""

from __future__ import annotations

import time
from typing import Any

from ..config.schema import Config, is_embedding_model
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse
from ..options import normalize_meta
from ..relay import OPENAI_SSE
from ..runner import Call, Exchange, Runner, forward_body
from .bodies import read_json_object
from .render import RouterReply

PLANE = "standalone"


def capable_model(cfg: Config, pinned: str | None, embedding: bool) -> tuple[str, str]:
    """The model to use and why: the pinned one, else the first configured model of the right kind."""
    if pinned is not None:
        return pinned, f"Pinned by the request's model: {pinned}"
    kind = "embedding" if embedding else "completion"
    for spec in cfg.models:
        if is_embedding_model(spec) == embedding:
            return spec.name, f"First configured {kind} model"
    hint = ' (label one with "embedding" in purpose or tags)' if embedding else ""
    raise HttpError(404, f"No configured {kind} model{hint}", code="model_not_found")


async def forwarded(runner: Runner, cfg: Config, req: Request, path: str, *, embedding: bool,
                    api: str) -> Response | StreamResponse:
    """Run an embedding or text-completion request on its capable model (no failover: there is no route)."""
    started = time.perf_counter()
    task = "embedding" if embedding else "completion"
    try:
        body = await read_json_object(req)
        pinned = runner.pin(body.get("model"))
        model, reason = capable_model(cfg, pinned, embedding)
        meta = normalize_meta(body.get("router"), cfg)
    except HttpError as e:
        runner.count(PLANE, task, None, "sync", e.status, started, api=api, reason=e.code)
        raise
    stream = not embedding and body.get("stream") is True
    call = Call(path, lambda m: forward_body(body, m, default_stream=None if embedding else False), [model],
                meta.priority, req.principal.user, meta.wait_ms(False), meta.max_execution_time_ms,
                stream=OPENAI_SSE if stream else None, failover=False, api=api, plane=PLANE, task=task, log=req.log,
                reason=reason)

    def describe(ex: Exchange) -> dict[str, Any]:
        router: dict[str, Any] = {
            "mode": "sync", "taskType": task, "selectedModel": ex.model, "fallbackModels": [],
            "queueTimeMs": ex.queue_ms, "executionTimeMs": ex.execution_ms(), "decisionReason": reason,
        }
        if pinned is not None:
            router["pinned"] = True
        return router

    return await runner.run(call, RouterReply(describe))
