"""What the doors whose clients wait for their answer share (native chat/generate, Anthropic Messages,
OpenAI Responses): classify and decide now, with no job to fall back on, since none of those clients can
poll one; refuse when no model can take the request; build the runner's ``Call`` from the decision; and
count a request that was refused before it ran."""

from __future__ import annotations

import time
from typing import Awaitable, Callable, Sequence

from ..config.schema import Config
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse
from ..options import normalize_meta
from ..relay import StreamFormat
from ..runner import Call, Renderer, Routed, Runner

PLANE = "standalone"


def route_now(runner: Runner, cfg: Config, req: Request, body: dict, conversation: dict, *, door: str) -> Routed:
    """Classify ``conversation`` (chat-shaped: ``messages``, ``tools``) and decide for a client that waits.

    ``body`` is the client's own: its ``model`` may pin, its ``router`` object tunes the decision. ``door``
    names the API in the message that refuses ``router.mode: async``.
    """
    meta = normalize_meta(body.get("router"), cfg)
    if meta.mode == "async":
        raise HttpError(400, f"router.mode async needs /v1/chat/completions: {door} clients cannot poll jobs",
                        code="invalid_router_options")
    routed = runner.route(conversation, meta._replace(allow_async=False), pinned=runner.pin(body.get("model")),
                          client=body, headers=req.headers)
    req.log["taskType"] = routed.classification.task_type
    if routed.decision.model is None:
        raise HttpError(503, routed.decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
    return routed


def routed_call(req: Request, routed: Routed, path: str, body_for: Callable[[str], bytes], *, api: str,
                stream: StreamFormat | None, headers: Sequence[tuple[str, str]] = ()) -> Call:
    """The runner's call for a routed request: its models in failover order, its ``router`` limits."""
    meta = routed.meta
    return Call(path, body_for, routed.models(), meta.priority, req.principal.user, meta.wait_ms(False),
                meta.max_execution_time_ms, stream=stream, api=api, plane=req.principal.plane or PLANE,
                task=routed.classification.task_type, log=req.log, headers=tuple(headers),
                reason=routed.decision.reason, record=routed.record, session=routed.session)


async def answer(runner: Runner, req: Request, api: str,
                 prepare: Callable[[Request], Awaitable[tuple[Call, Renderer]]]) -> Response | StreamResponse:
    """Run what ``prepare`` made of ``req``; a refusal on the way (bad body, no model) is counted for ``api``."""
    started = time.perf_counter()
    try:
        call, render = await prepare(req)
    except HttpError as e:
        runner.count(req.principal.plane or PLANE, req.log.get("taskType"), None, "sync", e.status, started, api=api,
                     reason=e.code)
        raise
    return await runner.run(call, render)
