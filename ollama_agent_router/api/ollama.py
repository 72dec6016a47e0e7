"""The Ollama-native door (Open WebUI, n8n, Continue, the ``ollama`` library point at the router as if it
were Ollama).

``/api/chat`` and ``/api/generate`` are classified and routed like chat completions and relay Ollama's
NDJSON stream line by line (router metadata in the ``X-Router-*`` headers: NDJSON has no comments).
``/api/embed`` and the legacy ``/api/embeddings`` go to the pinned or first embedding model. Listings,
``/api/show`` and ``/api/version`` are Ollama's own, with ``auto`` added where models are listed and
``auto`` shown as the model a request would get now. ``GET /`` answers like Ollama (clients probe it).

Model management (pull, push, create, copy, delete) is not exposed: those change what the Ollama host
holds, which is its operator's business there, not a client's through the router. They get a 403 that
says so. Every error under ``/api`` is in Ollama's own shape, ``{"error": "..."}`` (``ERROR_DIALECT``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..config.schema import Config, ModelSpec
from ..errors import HttpError
from ..fit import num_ctx_for
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jsonutil import iso_ms
from ..options import normalize_meta
from ..relay import OLLAMA_NDJSON
from ..runner import Call, Renderer, Routed, Runner, forward_body
from ..snapshot import Snapshot
from ..upstream import OllamaClient, UpstreamError, upstream_http_error
from .bodies import read_json_object
from .forwarded import forwarded
from .render import header_value, routed_reply
from .routed import PLANE, answer, route_now, routed_call
from .table import OPEN, Route

AUTO = "auto"
ERROR_DIALECT = ("/api", "ollama")
MANAGEMENT = (("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/copy"),
              ("DELETE", "/api/delete"))


def auto_tag(created: float) -> dict[str, Any]:
    """``auto`` as an ``/api/tags`` entry shaped like Ollama's own (clients key on ``model``)."""
    return {
        "name": AUTO, "model": AUTO, "modified_at": iso_ms(created), "size": 0,
        "digest": hashlib.sha256(b"ollama-agent-router/auto").hexdigest(),
        "details": {"parent_model": "", "format": "router", "family": "router", "families": ["router"],
                    "parameter_size": "", "quantization_level": ""},
    }


def context_options(body: dict, routed: Routed, spec: ModelSpec) -> dict[str, Any] | None:
    """The ``options`` to send ``spec``'s model so its context holds the request (``fit.num_ctx_for``), or None
    to send the body's own: the model's default holds it, or the client set ``num_ctx`` (or ``options`` is
    not an object, which is Ollama's to refuse)."""
    num_ctx = num_ctx_for(routed.context_tokens, spec)
    options = body.get("options", {})
    if num_ctx is None or not isinstance(options, dict) or "num_ctx" in options:
        return None
    return {**options, "num_ctx": num_ctx}


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
            Route("GET", "/", OPEN, self.running),
            Route("GET", "/api/tags", PLANE, self.tags),
            Route("GET", "/api/ps", PLANE, self.ps),
            Route("GET", "/api/version", PLANE, self.version),
            Route("POST", "/api/show", PLANE, self.show),
            Route("POST", "/api/chat", PLANE, self.chat),
            Route("POST", "/api/generate", PLANE, self.generate),
            Route("POST", "/api/embed", PLANE, self.embed),
            Route("POST", "/api/embeddings", PLANE, self.embeddings),
        ] + [Route(method, path, PLANE, self.management) for method, path in MANAGEMENT]

    async def running(self, req: Request, params: dict[str, str]) -> Response:
        """Ollama's liveness answer: Claude Code sends ``HEAD /`` before its first request."""
        return Response(200, b"Ollama is running", content_type="text/plain; charset=utf-8")

    async def management(self, req: Request, params: dict[str, str]) -> Response:
        raise HttpError(403, f"{req.path} is not available through the router: pulling, pushing, creating, copying "
                        "and deleting models change what the Ollama host holds, so they are done on that host "
                        "(the ollama CLI), not by clients of the router", code="model_management_disabled")

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

    async def _passthrough(self, path: str, body: dict | None = None,
                           headers: list[tuple[str, str]] | None = None) -> Response:
        """Ollama's answer to a small GET (or POST of ``body``), as it is: no model slot, nothing routed."""
        timeout = self.cfg.ollama.request_timeout_ms / 1000
        try:
            if body is None:
                status, data = await self.client.get_json(f"{self.native}{path}", timeout=timeout)
            else:
                status, data = await self.client.post_json(f"{self.native}{path}", body, timeout=timeout)
        except UpstreamError as e:
            raise e.to_http(self.client.display_url) from None
        if status >= 400:
            raise upstream_http_error(status, data)
        return json_response(200, data, headers)

    async def ps(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/ps")

    async def version(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/version")

    async def show(self, req: Request, params: dict[str, str]) -> Response:
        """Ollama's model card. ``auto`` (or no name) shows the model an empty request would be routed to
        now; other names, configured or not, are Ollama's to answer, as in ``/api/tags``."""
        body = await read_json_object(req)
        name = body.get("model", body.get("name"))
        if name is not None and not isinstance(name, str):
            raise HttpError(400, "model must be a string", code="invalid_body")
        if name in (None, "", AUTO):
            routed = self.runner.route({"messages": []}, normalize_meta(None, self.cfg))
            if routed.decision.model is None:
                raise HttpError(503, routed.decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
            model = routed.decision.model
        else:
            model = self.runner.table.resolve(name) or name
        req.log["model"] = model
        shown = {k: v for k, v in body.items() if k not in ("name", "router")}
        return await self._passthrough("/show", {**shown, "model": model}, [("X-Router-Selected-Model",
                                                                             header_value(model))])

    # ---- chat and generate: routed ------------------------------------------------------------------
    async def chat(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await self._generation(req, "chat")

    async def generate(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await self._generation(req, "generate")

    async def _generation(self, req: Request, api: str) -> Response | StreamResponse:
        async def prepare(req: Request) -> tuple[Call, Renderer]:
            body = await read_json_object(req)
            if "stream" in body and not isinstance(body["stream"], bool):
                raise HttpError(400, "stream must be a boolean", code="invalid_body")
            conversation = {"messages": native_messages(body, api), "tools": body.get("tools")}
            routed = route_now(self.runner, self.cfg, req, body, conversation, door="native")
            stream = body.get("stream", True)  # Ollama's native APIs stream unless told otherwise
            call = routed_call(req, routed, f"{self.native}/{api}", lambda m: self._body_for(body, routed, m),
                               api="ollama", stream=OLLAMA_NDJSON if stream else None)
            return call, routed_reply(routed, comment=False)

        return await answer(self.runner, req, "ollama", prepare)

    def _body_for(self, body: dict, routed: Routed, model: str) -> bytes:
        options = context_options(body, routed, self.runner.table.models[model])
        return forward_body(body, model, default_stream=None, also=options and {"options": options})

    async def embed(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await forwarded(self.runner, self.cfg, req, f"{self.native}/embed", embedding=True, api="ollama")

    async def embeddings(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        """The legacy single-prompt embedding API, still used by older clients (LangChain's OllamaEmbeddings)."""
        return await forwarded(self.runner, self.cfg, req, f"{self.native}/embeddings", embedding=True, api="ollama")
