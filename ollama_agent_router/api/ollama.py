"""The front door for local clients besides chat completions: OpenAI model listing, embeddings and text
completions, and the Ollama-native API (Open WebUI, n8n, Continue, the ``ollama`` library).

``/api/chat`` and ``/api/generate`` are classified and routed like chat completions and relay
Ollama's NDJSON stream chunk by chunk. Embeddings and text completions go to the model the client
pinned, else to the first configured model able to serve them. Listings and ``/api/version`` are
Ollama's own, with ``auto`` added where models are listed.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Callable

from ..config.schema import ModelSpec
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jsonutil import iso_ms
from ..relay import StreamStats, relay, sse_comment
from ..routing import RouterMeta, normalize_meta
from ..scheduler import WaitTimeout
from ..service import Exchange, Routed, forward_body, upstream_http_error
from ..upstream import UpstreamError
from .openai import router_headers
from .table import Route, read_json_object

if TYPE_CHECKING:
    from ..app import App

AUTO = "auto"
NDJSON = "application/x-ndjson"
EMBEDDING_LABELS = frozenset({"embed", "embedding", "embeddings"})
PLANE = "standalone"


def is_embedding_model(spec: ModelSpec) -> bool:
    """Embedding models are the ones labelled so in ``purpose`` or ``tags``; every other model completes text."""
    return not EMBEDDING_LABELS.isdisjoint(spec.purpose + spec.tags)


def owned_by(name: str) -> str:
    """The namespace Ollama reports as ``owned_by``: ``library`` for official models, else the user part."""
    parts = name.split("/")
    return "library" if len(parts) == 1 else parts[-2]


def model_entry(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created,
            "owned_by": "ollama-agent-router" if name == AUTO else owned_by(name)}


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


class FrontDoor:
    def __init__(self, app: App) -> None:
        self.app = app
        self.cfg = app.cfg
        self.started = time.time()
        self.native = app.cfg.ollama.native_api_base_path

    # ---- listings -----------------------------------------------------------------------------------------
    async def list_models(self, req: Request, params: dict[str, str]) -> Response:
        created = int(self.started)
        names = [AUTO] + [m.name for m in self.cfg.models]
        return json_response(200, {"object": "list", "data": [model_entry(n, created) for n in names]})

    async def get_model(self, req: Request, params: dict[str, str]) -> Response:
        wanted = "/".join(params[k] for k in ("owner", "id") if k in params)
        if wanted != AUTO and self.app.table.resolve(wanted) is None:
            raise HttpError(404, f"The model '{wanted}' does not exist", code="model_not_found")
        return json_response(200, model_entry(wanted, int(self.started)))

    async def tags(self, req: Request, params: dict[str, str]) -> Response:
        try:
            status, data = await self.app.snapshot.tags()
        except UpstreamError as e:
            raise e.to_http(self.cfg.ollama.base_url) from None
        if status >= 400:
            raise upstream_http_error(status, data)
        listing = data if isinstance(data, dict) else {}
        models = listing.get("models") if isinstance(listing.get("models"), list) else []
        return json_response(200, {**listing, "models": [auto_tag(self.started)] + models})

    async def _passthrough(self, path: str) -> Response:
        try:
            status, data = await self.app.client.get_json(f"{self.native}{path}",
                                                          timeout=self.cfg.ollama.request_timeout_ms / 1000)
        except UpstreamError as e:
            raise e.to_http(self.cfg.ollama.base_url) from None
        if status >= 400:
            raise upstream_http_error(status, data)
        return json_response(200, data)

    async def ps(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/ps")

    async def version(self, req: Request, params: dict[str, str]) -> Response:
        return await self._passthrough("/version")

    # ---- shared running ---------------------------------------------------------------------------------
    async def _open(self, req: Request, models: list[str], path: str, body_for: Callable[[str], bytes],
                    meta: RouterMeta, failover: bool = True) -> Exchange:
        try:
            return await self.app.service.open(
                models, path, body_for, priority=meta.priority, user=req.principal.user,
                max_wait=meta.max_queue_time_ms / 1000, timeout_ms=meta.max_execution_time_ms, failover=failover,
            )
        except WaitTimeout:
            raise HttpError(503, f"{models[0]} has no free slot within {meta.max_queue_time_ms} ms",
                            code="queue_timeout", headers=[("Retry-After", "1")]) from None

    def _observe(self, task: str | None, model: str | None, mode: str, status: int, started: float,
                 stats: StreamStats | None = None, usage: Any = None) -> None:
        self.app.metrics.observe_request(
            PLANE, task, model, mode, status, time.perf_counter() - started,
            first_byte=stats.first_byte_at if stats else None,
            usage=usage or (stats.usage if stats else None), chunks=stats.chunks if stats else 0,
        )

    def _relay(self, ex: Exchange, router: dict, task: str | None, started: float, native: bool) -> StreamResponse:
        stats = StreamStats()

        def done() -> None:
            ex.slot.release()
            self._observe(task, ex.model, "stream", 200 if stats.completed and not stats.error else 502, started, stats)

        def clock() -> float:
            return time.perf_counter() - started

        headers = router_headers(router)
        if native:
            # NDJSON has no comment lines: the router metadata travels in the X-Router-* headers only.
            chunks = relay(ex.response, stats, clock, native=True, on_end=done)
            return StreamResponse(200, chunks, headers, content_type=NDJSON)
        return StreamResponse(200, relay(ex.response, stats, clock, on_end=done), headers,
                              prelude=sse_comment("router", router))

    async def _answer(self, ex: Exchange, router: dict, task: str | None, started: float) -> Response:
        result = await self.app.service.read_result(ex)
        out: dict[str, Any] = dict(result) if isinstance(result, dict) else {"result": result}
        out["router"] = router
        usage = out.get("usage")
        self._observe(task, ex.model, "sync", 200, started, usage=usage if isinstance(usage, dict) else out)
        return json_response(200, out, router_headers(router))

    # ---- Ollama-native chat and generate: routed --------------------------------------------------------
    async def native_generation(self, req: Request, api: str) -> Response | StreamResponse:
        started = time.perf_counter()
        task = None
        try:
            body = await read_json_object(req)
            if "stream" in body and not isinstance(body["stream"], bool):
                raise HttpError(400, "stream must be a boolean", code="invalid_body")
            stream = body.get("stream", True)  # Ollama's native APIs stream unless told otherwise
            messages = native_messages(body, api)
            meta = normalize_meta(body.get("router"), self.cfg)
            if meta.mode == "async":
                raise HttpError(400, "router.mode async needs /v1/chat/completions: native clients cannot poll jobs",
                                code="invalid_router_options")
            meta = meta._replace(allow_async=False)
            tools = body.get("tools")
            routed = self.app.service.route({"messages": messages, "tools": tools}, meta,
                                            pinned=self.app.service.pin(body.get("model")))
            task = routed.classification.task_type
            req.log["taskType"] = task
            return await self._run_native(req, api, body, routed, bool(stream), started)
        except HttpError as e:
            self._observe(task, None, "sync", e.status, started)
            raise

    async def _run_native(self, req: Request, api: str, body: dict, routed: Routed, stream: bool,
                          started: float) -> Response | StreamResponse:
        decision = routed.decision
        if decision.model is None:
            raise HttpError(503, decision.reason, code="no_model_available", headers=[("Retry-After", "5")])
        models = [decision.model] + decision.failover_order()
        ex = await self._open(req, models, f"{self.native}/{api}",
                              lambda m: forward_body(body, m, default_stream=None), routed.meta)
        req.log["model"] = ex.model
        router = self.app.service.router_object(routed, ex)
        task = routed.classification.task_type
        if stream and ex.response.status < 400:
            return self._relay(ex, router, task, started, native=True)
        return await self._answer(ex, router, task, started)

    # ---- embeddings and text completions: pinned or first capable model ---------------------------------
    def capable_model(self, pinned: str | None, embedding: bool) -> tuple[str, str]:
        if pinned is not None:
            return pinned, f"Pinned by the request's model: {pinned}"
        kind = "embedding" if embedding else "completion"
        for spec in self.cfg.models:
            if is_embedding_model(spec) == embedding:
                return spec.name, f"First configured {kind} model"
        hint = ' (label one with "embedding" in purpose or tags)' if embedding else ""
        raise HttpError(404, f"No configured {kind} model{hint}", code="model_not_found")

    async def forwarded(self, req: Request, path: str, embedding: bool) -> Response | StreamResponse:
        started = time.perf_counter()
        task = "embedding" if embedding else "completion"
        model = None
        try:
            body = await read_json_object(req)
            pinned = self.app.service.pin(body.get("model"))
            model, reason = self.capable_model(pinned, embedding)
            meta = normalize_meta(body.get("router"), self.cfg)
            stream = not embedding and body.get("stream") is True
            ex = await self._open(req, [model], path,
                                  lambda m: forward_body(body, m, default_stream=None if embedding else False),
                                  meta, failover=False)
        except HttpError as e:
            self._observe(task, model, "sync", e.status, started)
            raise
        req.log["model"] = ex.model
        router: dict[str, Any] = {
            "mode": "sync", "taskType": task, "selectedModel": ex.model,
            "fallbackModels": [], "queueTimeMs": ex.queue_ms, "executionTimeMs": ex.execution_ms(),
            "decisionReason": reason,
        }
        if pinned is not None:
            router["pinned"] = True
        if stream and ex.response.status < 400:
            return self._relay(ex, router, task, started, native=False)
        try:
            return await self._answer(ex, router, task, started)
        except HttpError as e:
            self._observe(task, model, "sync", e.status, started)
            raise


def routes(app: "App") -> list[Route]:
    f = FrontDoor(app)
    native = app.cfg.ollama.native_api_base_path
    v1 = app.cfg.ollama.open_ai_compatible_path.removesuffix("/chat/completions")

    async def api_chat(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await f.native_generation(req, "chat")

    async def api_generate(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await f.native_generation(req, "generate")

    async def api_embed(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await f.forwarded(req, f"{native}/embed", embedding=True)

    async def embeddings(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await f.forwarded(req, f"{v1}/embeddings", embedding=True)

    async def completions(req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await f.forwarded(req, f"{v1}/completions", embedding=False)

    return [
        Route("GET", "/v1/models", PLANE, f.list_models),
        Route("GET", "/v1/models/{id}", PLANE, f.get_model),
        Route("GET", "/v1/models/{owner}/{id}", PLANE, f.get_model),  # a namespaced name with its slash unencoded
        Route("POST", "/v1/embeddings", PLANE, embeddings),
        Route("POST", "/v1/completions", PLANE, completions),
        Route("GET", "/api/tags", PLANE, f.tags),
        Route("GET", "/api/ps", PLANE, f.ps),
        Route("GET", "/api/version", PLANE, f.version),
        Route("POST", "/api/chat", PLANE, api_chat),
        Route("POST", "/api/generate", PLANE, api_generate),
        Route("POST", "/api/embed", PLANE, api_embed),
    ]
