"""The Ollama-native door (Open WebUI, n8n, Continue, the ``ollama`` library point at the router as if it
were Ollama).

``/api/chat`` and ``/api/generate`` are classified and routed like chat completions and relay Ollama's
NDJSON stream line by line (router metadata in the ``X-Router-*`` headers: NDJSON has no comments).
``/api/embed`` goes to the pinned or first embedding model. Listings and ``/api/version`` are Ollama's own,
with ``auto`` added where models are listed.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..config.schema import Config
from ..errors import HttpError
from ..http.server import Request, Response, StreamResponse, json_response
from ..jsonutil import iso_ms
from ..relay import OLLAMA_NDJSON
from ..routing import normalize_meta
from ..runner import Call, Runner, forward_body
from ..snapshot import Snapshot
from ..upstream import OllamaClient, UpstreamError, upstream_http_error
from .bodies import read_json_object
from .forwarded import forwarded
from .render import routed_reply
from .table import Route

AUTO = "auto"
PLANE = "standalone"


def auto_tag(created: float) -> dict[str, Any]:
    """``auto`` as an ``/api/tags`` entry shaped like Ollama's own (clients key on ``model``)."""
    return {
        "name": AUTO, "model": AUTO, "modified_at": iso_ms(created), "size": 0,
        "digest": hashlib.sha256(b"ollama-agent-router/auto").hexdigest(),
        "details": {"parent_model": "", "format": "router", "family": "router", "families": ["router"],
                    "parameter_size": "", "quantization_level": ""},
    }


def native_messages(body: dict, api: str) -> list:
    """The conversation to classify: ``/api/chat`` messages, or ``/api/generate``'s system + prompt."""
    if api == "chat":
        messages = body.get("messages", [])
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                     for m in messages):
            raise HttpError(400, "messages must be an array of objects with a string role", code="invalid_messages")
        return messages
    messages = []
    for role, key in (("system", "system"), ("user", "prompt")):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise HttpError(400, f"{key} must be a string", code="invalid_body")
        if value:
            messages.append({"role": role, "content": value})
    return messages


class OllamaDoor:
    def __init__(self, cfg: Config, runner: Runner, snapshot: Snapshot, client: OllamaClient) -> None:
        self.cfg = cfg
        self.runner = runner
        self.snapshot = snapshot
        self.client = client
        self.started = time.time()
        self.native = cfg.ollama.native_api_base_path

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/api/tags", PLANE, self.tags),
            Route("GET", "/api/ps", PLANE, self.ps),
            Route("GET", "/api/version", PLANE, self.version),
            Route("POST", "/api/chat", PLANE, self.chat),
            Route("POST", "/api/generate", PLANE, self.generate),
            Route("POST", "/api/embed", PLANE, self.embed),
        ]

    # ---- listings -----------------------------------------------------------------------------------
    async def tags(self, req: Request, params: dict[str, str]) -> Response:
        try:
            status, data = await self.snapshot.tags()
        except UpstreamError as e:
            raise e.to_http(self.client.display_url) from None
        if status >= 400:
            raise upstream_http_error(status, data)
        listing = data if isinstance(data, dict) else {}
        models = listing.get("models") if isinstance(listing.get("models"), list) else []
        return json_response(200, {**listing, "models": [auto_tag(self.started)] + models})

    async def _passthrough(self, path: str) -> Response:
        try:
            status, data = await self.client.get_json(f"{self.native}{path}",
                                                      timeout=self.cfg.ollama.request_timeout_ms / 1000)
        except UpstreamError as e:
            raise e.to_http(self.client.display_url) from None
        if status >= 400:
            raise upstream_http_error(status, data)
        return json_response(200, data)

    async def ps(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/ps")

    async def version(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/version")

    # ---- chat and generate: routed ------------------------------------------------------------------
    async def chat(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await self._generation(req, "chat")

    async def generate(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await self._generation(req, "generate")

    async def _generation(self, req: Request, api: str) -> Response | StreamResponse:
        started = time.perf_counter()
        try:
            body = await read_json_object(req)
            if "stream" in body and not isinstance(body["stream"], bool):
                raise HttpError(400, "stream must be a boolean", code="invalid_body")
            messages = native_messages(body, api)
            meta = normalize_meta(body.get("router"), self.cfg)
            if meta.mode == "async":
                raise HttpError(400, "router.mode async needs /v1/chat/completions: native clients cannot poll jobs",
                                code="invalid_router_options")
            routed = self.runner.route({"messages": messages, "tools": body.get("tools")},
                                       meta._replace(allow_async=False), pinned=self.runner.pin(body.get("model")))
            task = req.log["taskType"] = routed.classification.task_type
            if routed.decision.model is None:
                raise HttpError(503, routed.decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
        except HttpError as e:
            self.runner.count(PLANE, req.log.get("taskType"), None, "sync", e.status, started, api="ollama",
                              reason=e.code)
            raise
        stream = body.get("stream", True)  # Ollama's native APIs stream unless told otherwise
        call = Call(f"{self.native}/{api}", lambda m: forward_body(body, m, default_stream=None), routed.models(),
                    meta.priority, req.principal.user, meta.max_queue_time_ms, meta.max_execution_time_ms,
                    stream=OLLAMA_NDJSON if stream else None, api="ollama", plane=PLANE, task=task, log=req.log,
                    reason=routed.decision.reason, record=routed.record)
        return await self.runner.run(call, routed_reply(routed, comment=False))

    async def embed(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await forwarded(self.runner, self.cfg, req, f"{self.native}/embed", embedding=True, api="ollama")
