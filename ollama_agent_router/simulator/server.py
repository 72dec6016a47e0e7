"""A simulated Ollama server: the native API, the OpenAI layer and the scheduler, over real HTTP.

Users run it with ``ollama-agent-router simulate`` (or ``serve --simulate``); every test and benchmark uses
it as the stand-in for Ollama. Replies are deterministic and cheap. Faults can be injected per model to
exercise a router's failure handling, and the observation fields (``calls``, ``peak_concurrency``…) let
tests check what reached "Ollama". Shapes and texts follow shared/spec/wire-formats.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..http.messages import JSON, Request, Response, ServerLimits, StreamResponse
from ..http.server import HttpServer
from ..jsonutil import dumps
from ..log import Logger
from .run import Executor, Fault, SimCall, SimModel, StreamDropped
from .sched import GB, MIB, ModelScheduler
from .wire import (
    EMBEDDING_DIMS,
    NDJSON,
    OPENAI_JSON,
    ChatSseWriter,
    CompletionSseWriter,
    Reply,
    SimError,
    base64_floats,
    canonical_name,
    chat_completion,
    check_v1_messages,
    digest,
    full_name,
    include_usage,
    message_text,
    monotonic_to_local,
    native_chunk,
    native_final,
    native_num_predict,
    ndjson,
    now_utc,
    openai_error,
    owner,
    parameter_count,
    parse_keep_alive,
    plan_reply,
    reasoning_think,
    rfc3339,
    status_message,
    text_completion,
    tools_text,
)

if TYPE_CHECKING:
    from ..config.schema import Config
    from ..gpu import GpuDevice

__all__ = ["Fault", "OllamaSimulator", "SimModel", "SimulatedGpu", "default_models", "run_simulator"]

RESERVED_FRACTION = 0.0043  # driver-reserved share of VRAM, as measured on the H200 fixture
_THINK_LEVELS = ("low", "medium", "high", "max")


class SimulatedGpu:
    """A GPU backend whose free memory follows the simulator's loaded models."""

    source = "simulated"

    def __init__(self, sim: OllamaSimulator) -> None:
        self._sim = sim

    def read_devices(self) -> list[GpuDevice]:
        from ..gpu import GpuDevice  # imported late: the gpu module is optional for the simulator itself

        sim = self._sim
        used = sim.sched.vram_used() / MIB
        util = min(100.0, 100.0 * sim.sched.generating() / sim.num_parallel)
        uid = digest(sim.gpu_name)
        uuid = f"GPU-{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
        free = max(0.0, sim.gpu_total_mb - sim.reserved_mb - used)
        return [GpuDevice(0, sim.gpu_name, uuid, sim.gpu_total_mb, used, free, util, sim.reserved_mb)]


class OllamaSimulator:
    def __init__(
        self, models: list[SimModel], *, gpu_total_mb: float = 24576, gpu_name: str = "Simulated GPU",
        num_parallel: int = 1, max_queue: int = 512, max_loaded_models: int = 3,
        load_seconds_per_gb: float = 0.0, tokens_per_second: float = 0.0, reply_tokens: int = 8,
        stream_flavour: str = "current", version: str = "0.12.3", default_keep_alive: str = "5m",
        ps_blocks_while_loading: bool = False, log: Logger | None = None, calls_kept: int = 10_000,
    ) -> None:
        if stream_flavour not in ("current", "legacy"):
            raise ValueError(f"stream_flavour must be 'current' or 'legacy', not {stream_flavour!r}")
        self.models = {m.canonical: m for m in models}
        self.gpu_total_mb = gpu_total_mb
        self.gpu_name = gpu_name
        self.reserved_mb = round(gpu_total_mb * RESERVED_FRACTION)
        self.num_parallel = max(1, num_parallel)
        self.reply_tokens = max(1, reply_tokens)
        self.stream_flavour = stream_flavour
        self.version = version
        self.default_keep_alive = default_keep_alive
        # Like OLLAMA_KEEP_ALIVE, the server default may also be bare integer seconds.
        bare = re.fullmatch(r"-?\d+", default_keep_alive.strip())
        self._default_keep_alive_s = parse_keep_alive(int(default_keep_alive) if bare else default_keep_alive)
        self.ps_blocks_while_loading = ps_blocks_while_loading
        self.log = log or Logger("warning")
        self.url = ""
        self.port = 0
        # Observation, for tests. Only the latest requests are kept: a simulator serving for days must not grow.
        self.calls: deque[dict[str, Any]] = deque(maxlen=calls_kept)
        self.loads: list[str] = []
        self.keep_alive_refreshes: list[tuple[str, str]] = []
        self.sched = ModelScheduler(
            vram_bytes=int(gpu_total_mb * MIB), reserved_bytes=int(self.reserved_mb * MIB), max_queue=max_queue,
            max_loaded=max_loaded_models, log=self.log, on_load=self.loads.append,
        )
        self.peak_concurrency = self.sched.peak
        self.in_flight = self.sched.in_flight
        self.run = Executor(self.sched, num_parallel=self.num_parallel, load_seconds_per_gb=load_seconds_per_gb,
                            tokens_per_second=tokens_per_second)
        self._rng = random.Random()
        self._faults: dict[str, list[list[Any]]] = {}  # key -> [[fault, remaining uses], ...]
        self._host = "127.0.0.1"
        self._http: HttpServer | None = None
        self._transition: asyncio.Task | None = None
        # Newest first, an hour apart, so /api/tags lists models in the order given.
        base = time.time_ns() - 86_400 * 10**9
        self._modified = {m.canonical: base - i * 3_600 * 10**9 for i, m in enumerate(models)}
        self._routes: dict[str, dict[str, Callable[[Request, dict], Awaitable[Any]]]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": self._show},
            "/api/chat": {"POST": self._api_chat},
            "/api/generate": {"POST": self._api_generate},
            "/api/embed": {"POST": self._api_embed},
            "/api/embeddings": {"POST": self._api_embeddings},
            "/v1/chat/completions": {"POST": self._v1_chat},
            "/v1/completions": {"POST": self._v1_completions},
            "/v1/embeddings": {"POST": self._v1_embeddings},
            "/v1/models": {"GET": self._v1_models},
        }

    @classmethod
    def from_config(cls, cfg: Config, **kw: Any) -> OllamaSimulator:
        """Models from ``cfg.models`` (``embed`` in purpose or tags makes an embedding model), VRAM from ``cfg.gpu``."""
        models = [_model_from_spec(spec) for spec in cfg.models]
        kw.setdefault("gpu_total_mb", cfg.gpu.vram_total_mb or 24576)
        if cfg.gpu.name:
            kw.setdefault("gpu_name", cfg.gpu.name)
        return cls(models, **kw)

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._host = host
        self._http = self._new_server()
        self.port = await self._http.listen(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        return self.port

    async def stop(self) -> None:
        if self._transition is not None:
            await self._transition
        self.run.epoch += 1
        if self._http is not None:
            await self._http.shutdown(0)
            self._http = None
        self.sched.reset()

    def set_down(self, down: bool) -> asyncio.Task:
        """Simulate Ollama going away (listener closed, open connections aborted, models lost) or coming back
        on the same port. Takes effect at the loop's next turn; await the returned task to be sure it has."""
        previous = self._transition
        self._transition = asyncio.get_running_loop().create_task(self._switch(down, previous))
        return self._transition

    async def _switch(self, down: bool, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await previous
        if down and self._http is not None:
            self.run.epoch += 1
            server, self._http = self._http, None
            self.sched.reset()
            await server.shutdown(0)
            self.log.info("sim_down", port=self.port)
        elif not down and self._http is None:
            self._http = self._new_server()
            await self._http.listen(self._host, self.port)
            self.log.info("sim_up", port=self.port)

    def _new_server(self) -> HttpServer:
        return HttpServer(self._handle, limits=ServerLimits(max_body=64 * 1024 * 1024), log=self.log)

    # ---- faults and observation -------------------------------------------------------------------------
    def inject(self, model: str, fault: Fault) -> None:
        """Queue a fault for a model, for every model (``"*"``), or for a path such as ``"/api/ps"``."""
        if fault.times is not None and fault.times <= 0:
            return
        key = model if model == "*" or model.startswith("/") else canonical_name(model)
        self._faults.setdefault(key, []).append([fault, fault.times])

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, *keys: str) -> Fault | None:
        for key in keys:
            queue = self._faults.get(key)
            if not queue:
                continue
            entry = queue[0]
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    queue.pop(0)
            return entry[0]
        return None

    async def _fault_head(self, fault: Fault | None, sent: str | None) -> None:
        if fault is None:
            return
        if fault.first_byte_delay_s > 0:
            await asyncio.sleep(fault.first_byte_delay_s)
        if fault.status is not None:
            raise SimError(fault.status, fault.message or status_message(fault.status, sent))

    @property
    def cancelled(self) -> int:
        """Requests whose client went away while queued or generating."""
        return self.run.cancelled

    def loaded(self) -> dict[str, dict[str, Any]]:
        return {
            r.name: {"size": r.size, "size_vram": r.size_vram, "expires_at": r.expires_at,
                     "context_length": r.num_ctx, "state": r.state, "keep_alive": r.keep_alive,
                     "refs": r.refs, "busy": r.busy}
            for r in self.sched.runners.values()
        }

    def gpu_backend(self) -> SimulatedGpu:
        return SimulatedGpu(self)

    # ---- dispatch ---------------------------------------------------------------------------------------
    async def _handle(self, req: Request) -> Response | StreamResponse:
        call: dict[str, Any] = {"path": req.path, "method": req.method, "model": None, "body": None,
                                "t": time.monotonic(), "status": None}
        self.calls.append(call)
        try:
            response = await self._dispatch(req, call)
        except SimError as e:
            response = _error_response(req.path, e)
        except asyncio.CancelledError:
            call["status"] = 499
            raise
        call["status"] = response.status
        return response

    async def _dispatch(self, req: Request, call: dict) -> Response | StreamResponse:
        methods = self._routes.get(req.path)
        if methods is None and req.path.startswith("/v1/models/"):
            methods = {"GET": self._v1_model}
        if methods is None:
            return Response(404, b"404 page not found", content_type="text/plain")
        handler = methods.get(req.method)
        if handler is None:
            return Response(405, b"405 method not allowed", content_type="text/plain")
        return await handler(req, call)

    async def _body(self, req: Request, call: dict) -> dict[str, Any]:
        raw = await req.body()
        if not raw.strip():
            raise SimError(400, "missing request body")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            pos = getattr(e, "pos", 0)
            text = raw.decode("utf-8", "replace")
            if pos >= len(text.rstrip()):
                raise SimError(400, "unexpected EOF") from None
            raise SimError(400, f"invalid character '{text[pos]}' looking for beginning of value") from None
        if not isinstance(body, dict):
            kind = {list: "array", str: "string", bool: "bool"}.get(type(body), "number")
            raise SimError(400, f"json: cannot unmarshal {kind} into Go value of type api.Request")
        call["body"] = body
        if isinstance(body.get("model"), str):
            call["model"] = body["model"]
        return body

    def _lookup(self, body: dict[str, Any], key: str = "model") -> tuple[SimModel, str]:
        sent = body.get(key)
        if not isinstance(sent, str) or not sent:
            raise SimError(400, "model is required")
        model = self.models.get(canonical_name(sent))
        if model is None:
            raise SimError(404, f"model '{sent}' not found")
        return model, sent

    async def _job(self, req: Request, body: dict[str, Any], keep_alive: float | None) -> SimCall:
        """Resolve the model, apply any injected fault's head part, and start the clock."""
        t0 = time.perf_counter_ns()
        model, sent = self._lookup(body)
        fault = self._take_fault(req.path, model.canonical, "*")
        await self._fault_head(fault, sent)
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        num_ctx = options.get("num_ctx")
        num_ctx = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else model.context_length
        return SimCall(model, sent, keep_alive, num_ctx, fault, t0)

    def _keep_alive(self, body: dict[str, Any]) -> float | None:
        value = body.get("keep_alive")
        return self._default_keep_alive_s if value is None else parse_keep_alive(value)

    # ---- plain routes -----------------------------------------------------------------------------------------
    async def _plain_fault(self, req: Request) -> None:
        await self._fault_head(self._take_fault(req.path), None)

    async def _root(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        return Response(200, b"Ollama is running", content_type="text/plain; charset=utf-8")

    async def _version(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        return Response(200, dumps({"version": self.version}))

    def _details(self, model: SimModel) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": model.family, "families": [model.family],
                "parameter_size": model.parameter_size, "quantization_level": model.quantization_level}

    def _sorted_models(self) -> list[SimModel]:
        return sorted(self.models.values(), key=lambda m: self._modified[m.canonical], reverse=True)

    async def _tags(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        models = [
            {"name": m.canonical, "model": m.canonical, "modified_at": rfc3339(self._modified[m.canonical], local=True),
             "size": int(m.size_gb * GB), "digest": digest(m.canonical), "details": self._details(m)}
            for m in self._sorted_models()
        ]
        return Response(200, dumps({"models": models}))

    async def _ps(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        if self.ps_blocks_while_loading:
            for runner in self.sched.loading():
                await runner.ready.wait()
        now_mono, now_wall = time.monotonic(), time.time()
        runners = sorted(self.sched.runners.values(), key=lambda r: r.expires_at, reverse=True)
        models = [
            {"name": r.name, "model": r.name, "size": r.size, "digest": digest(r.name),
             "details": self._details(self.models[r.name]),
             "expires_at": monotonic_to_local(r.expires_at, now_mono, now_wall),
             "size_vram": r.size_vram, "context_length": r.num_ctx}
            for r in runners
        ]
        return Response(200, dumps({"models": models}))

    async def _show(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        body = await self._body(req, call)
        model, _ = self._lookup(body, "model" if body.get("model") else "name")
        c, arch = model.canonical, model.family
        info = {
            "general.architecture": arch,
            "general.parameter_count": parameter_count(model.parameter_size),
            f"{arch}.context_length": model.context_length,
            f"{arch}.embedding_length": EMBEDDING_DIMS if model.embeds else 4096,
        }
        return Response(200, dumps({
            "modelfile": f'# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, '
                         f"replace FROM with:\n# FROM {c}\n\nFROM {c}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": self._details(model),
            "model_info": info,
            "capabilities": list(model.capabilities),
            "modified_at": rfc3339(self._modified[c], local=True),
        }))

    async def _v1_models(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        data = [self._v1_entry(m, m.canonical) for m in self._sorted_models()]
        return Response(200, dumps({"object": "list", "data": data or None}) + b"\n", content_type=OPENAI_JSON)

    async def _v1_model(self, req: Request, call: dict) -> Response:
        await self._plain_fault(req)
        wanted = req.path[len("/v1/models/"):]
        model = self.models.get(canonical_name(wanted)) if wanted else None
        if model is None:
            raise SimError(404, f"model '{wanted}' not found")
        return Response(200, dumps(self._v1_entry(model, wanted)) + b"\n", content_type=OPENAI_JSON)

    def _v1_entry(self, model: SimModel, shown: str) -> dict[str, Any]:
        return {"id": shown, "object": "model", "created": self._modified[model.canonical] // 10**9,
                "owned_by": owner(model.canonical)}

    # ---- native generation -------------------------------------------------------------------------------------
    async def _api_chat(self, req: Request, call: dict) -> Response | StreamResponse:
        body = await self._body(req, call)
        keep_alive = self._keep_alive(body)
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise SimError(400, "json: cannot unmarshal messages: expected an array of messages")
        job = await self._job(req, body, keep_alive)
        if not messages:
            return await self._load_only("chat", job, body)
        if not all(isinstance(m, dict) for m in messages):
            raise SimError(400, "json: cannot unmarshal messages: expected objects")
        self._check_generative(job, "chat")
        if body.get("tools"):
            self._require(job.model, "tools")
        if any(m.get("images") for m in messages):
            self._require(job.model, "vision")
        think = self._think(body.get("think"), job)
        texts = [message_text(m.get("content")) for m in messages]
        last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        job.reply = self._plan(job, "".join(texts) + tools_text(body), last_user, body.get("tools"),
                               messages[-1].get("role") == "tool", think, native_num_predict(body))
        job.stream = body.get("stream") is not False
        return await self._native("chat", job, raw=False)

    async def _api_generate(self, req: Request, call: dict) -> Response | StreamResponse:
        body = await self._body(req, call)
        keep_alive = self._keep_alive(body)
        job = await self._job(req, body, keep_alive)
        prompt = body.get("prompt")
        if not prompt:
            return await self._load_only("generate", job, body)
        if not isinstance(prompt, str):
            raise SimError(400, "json: cannot unmarshal prompt: expected a string")
        raw = body.get("raw") is True
        if raw and any(body.get(k) for k in ("template", "system", "context")):
            raise SimError(400, "raw mode does not support template, system, or context")
        self._check_generative(job, "generate")
        if body.get("images"):
            self._require(job.model, "vision")
        think = self._think(body.get("think"), job)
        system = body.get("system") if isinstance(body.get("system"), str) else ""
        job.reply = self._plan(job, system + prompt, prompt, None, False, think, native_num_predict(body))
        job.stream = body.get("stream") is not False
        return await self._native("generate", job, raw=raw)

    async def _load_only(self, api: str, job: SimCall, body: dict[str, Any]) -> Response:
        """The empty request: load (or, with keep_alive 0, unload) the model and answer one object."""
        raw = body.get("keep_alive")
        shown = self.default_keep_alive if raw is None else raw if isinstance(raw, str) else json.dumps(raw)
        self.keep_alive_refreshes.append((job.model.canonical, shown))
        if job.keep_alive == 0:
            self.sched.unload(job.model.canonical)
            reason = "unload"
        else:
            runner = await self.run.attach(job)
            self.sched.detach(runner)
            reason = "load"
        obj = native_final(api, job.sent, now_utc(), reason, {})
        if body.get("stream") is False:
            return Response(200, dumps(obj))
        return Response(200, ndjson(obj), content_type=NDJSON)

    def _check_generative(self, job: SimCall, api: str) -> None:
        if job.model.embeds:
            raise SimError(400, f'"{job.sent}" does not support {api}')

    def _require(self, model: SimModel, capability: str) -> None:
        if capability not in model.capabilities:
            raise SimError(400, f"{full_name(model.canonical)} does not support {capability}")

    def _think(self, value: Any, job: SimCall) -> bool:
        if value is None:
            return "thinking" in job.model.capabilities
        if value is not True and value is not False and value not in _THINK_LEVELS:
            raise SimError(400, f'invalid think value: "{value}" (must be "high", "medium", "low", true, or false)')
        on = value is not False
        if on and "thinking" not in job.model.capabilities:
            raise SimError(400, f'"{job.sent}" does not support thinking')
        return on

    def _plan(self, job: SimCall, prompt_text: str, echo_source: str, tools: Any, after_tool: bool, think: bool,
              num_predict: int | None) -> Reply:
        return plan_reply(model=job.sent, prompt_text=prompt_text, echo_source=echo_source, tools=tools,
                          after_tool=after_tool, think=think, num_predict=num_predict,
                          reply_tokens=self.reply_tokens, rng=self._rng)

    async def _native(self, api: str, job: SimCall, raw: bool) -> Response | StreamResponse:
        reply = job.reply
        assert reply is not None
        context = None if raw or api == "chat" else list(range(100, 100 + reply.prompt_tokens + reply.eval_count))
        if job.stream:
            lease = await self.run.acquire(job)

            async def lines() -> AsyncIterator[bytes]:
                async for kind, value in self.run.generate(job, lease):
                    if kind == "done":
                        yield ndjson(native_final(api, job.sent, now_utc(), reply.done_reason, value, context=context))
                    elif kind == "error":
                        if value:
                            yield ndjson({"error": value})
                    else:
                        yield ndjson(native_chunk(api, job.sent, now_utc(), kind, value))
            return StreamResponse(200, self.run.guard(lease, job.fault, lines()), content_type=NDJSON)
        content, thinking, calls, metrics = await self.run.collect(job)
        obj = native_final(api, job.sent, now_utc(), reply.done_reason, metrics, content=content,
                           thinking=thinking, tool_calls=calls, context=context)
        return self._maybe_dropped(job.fault, Response(200, dumps(obj)))

    # ---- OpenAI layer --------------------------------------------------------------------------------------------
    async def _v1_chat(self, req: Request, call: dict) -> Response | StreamResponse:
        body = await self._body(req, call)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SimError(400, "[] is too short - 'messages'")
        has_images = check_v1_messages(messages)
        think = reasoning_think(body)
        job = await self._job(req, body, self._default_keep_alive_s)
        self._check_generative(job, "chat")
        if body.get("tools"):
            self._require(job.model, "tools")
        if has_images:
            self._require(job.model, "vision")
        think_on = self._think(think, job)
        texts = [message_text(m.get("content")) for m in messages]
        last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        max_tokens = body.get("max_tokens")
        job.reply = self._plan(job, "".join(texts) + tools_text(body), last_user, body.get("tools"),
                               messages[-1].get("role") == "tool", think_on,
                               max_tokens if isinstance(max_tokens, int) else None)
        if body.get("stream") is True:
            writer = ChatSseWriter(job.sent, self.stream_flavour, include_usage(body), self._rng)
            return await self._sse(job, writer)
        content, thinking, calls, metrics = await self.run.collect(job)
        reply = job.reply
        obj = chat_completion(job.sent, content, thinking, calls, reply.done_reason, reply.prompt_tokens,
                              metrics.get("eval_count", 0), self._rng)
        return self._maybe_dropped(job.fault, Response(200, dumps(obj) + b"\n", content_type=OPENAI_JSON))

    async def _v1_completions(self, req: Request, call: dict) -> Response | StreamResponse:
        body = await self._body(req, call)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise SimError(400, "prompt must be a string")
        job = await self._job(req, body, self._default_keep_alive_s)
        self._check_generative(job, "generate")
        max_tokens = body.get("max_tokens")
        job.reply = self._plan(job, prompt, prompt, None, False, False,
                               max_tokens if isinstance(max_tokens, int) else None)
        if body.get("stream") is True:
            return await self._sse(job, CompletionSseWriter(job.sent, include_usage(body), self._rng))
        content, _, _, metrics = await self.run.collect(job)
        obj = text_completion(job.sent, content, job.reply.done_reason, job.reply.prompt_tokens,
                              metrics.get("eval_count", 0), self._rng)
        return self._maybe_dropped(job.fault, Response(200, dumps(obj) + b"\n", content_type=OPENAI_JSON))

    async def _sse(self, job: SimCall, writer: ChatSseWriter | CompletionSseWriter) -> StreamResponse:
        lease = await self.run.acquire(job)
        reply = job.reply
        assert reply is not None

        async def events() -> AsyncIterator[bytes]:
            async for kind, value in self.run.generate(job, lease):
                if kind == "done":
                    for event in writer.finish(reply.done_reason, reply.prompt_tokens, value.get("eval_count", 0)):
                        yield event
                elif kind == "error":
                    yield writer.broken()
                else:
                    yield writer.event(kind, value)
        return StreamResponse(200, self.run.guard(lease, job.fault, events()), content_type="text/event-stream")

    # ---- embeddings -------------------------------------------------------------------------------------------------
    async def _api_embed(self, req: Request, call: dict) -> Response:
        body = await self._body(req, call)
        keep_alive = self._keep_alive(body)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if texts and (not isinstance(texts, list) or not all(isinstance(t, str) for t in texts)):
            raise SimError(400, "invalid input type")
        job = await self._job(req, body, keep_alive)
        texts = [t for t in texts or [] if t]
        if not texts:
            return Response(200, dumps({"model": job.sent, "embeddings": []}))
        vectors, metrics = await self._embed(job, texts, body.get("dimensions"), normalise=True)
        out = {"model": job.sent, "embeddings": vectors}
        out.update((k, metrics[k]) for k in ("total_duration", "load_duration", "prompt_eval_count"))
        return self._maybe_dropped(job.fault, Response(200, dumps(out)))

    async def _api_embeddings(self, req: Request, call: dict) -> Response:
        body = await self._body(req, call)
        keep_alive = self._keep_alive(body)
        job = await self._job(req, body, keep_alive)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return Response(200, dumps({"embedding": []}))
        vectors, _ = await self._embed(job, [prompt], None, normalise=False)
        return self._maybe_dropped(job.fault, Response(200, dumps({"embedding": vectors[0]})))

    async def _v1_embeddings(self, req: Request, call: dict) -> Response:
        body = await self._body(req, call)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SimError(400, "invalid input")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise SimError(400, f"invalid encoding format: {encoding}")
        job = await self._job(req, body, self._default_keep_alive_s)
        vectors, metrics = await self._embed(job, texts, body.get("dimensions"), normalise=True)
        data = [{"object": "embedding", "embedding": base64_floats(v) if encoding == "base64" else v, "index": i}
                for i, v in enumerate(vectors)]
        tokens = metrics["prompt_eval_count"]
        out = {"object": "list", "data": data, "model": job.sent,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return self._maybe_dropped(job.fault, Response(200, dumps(out) + b"\n", content_type=OPENAI_JSON))

    async def _embed(self, job: SimCall, texts: list[str], dimensions: Any,
                     normalise: bool) -> tuple[list[list[float]], dict[str, int]]:
        self._require(job.model, "embedding")
        dims = dimensions if isinstance(dimensions, int) and 0 < dimensions <= EMBEDDING_DIMS else EMBEDDING_DIMS
        return await self.run.embed(job, texts, dims, normalise)

    def _maybe_dropped(self, fault: Fault | None, response: Response) -> Response | StreamResponse:
        """A drop fault on a non-streamed reply: send half the body, then abort the connection."""
        if fault is None or fault.drop_after_chunks is None:
            return response
        body = response.body

        async def half() -> AsyncIterator[bytes]:
            yield body[: len(body) // 2]
            raise StreamDropped("injected fault: connection dropped mid-body")
        return StreamResponse(response.status, half(), content_type=response.content_type)


# ---- helpers ----------------------------------------------------------------------------------------------------

def _error_response(path: str, err: SimError) -> Response:
    if path.startswith("/v1/"):
        return Response(err.status, dumps(openai_error(err.status, err.message)) + b"\n", content_type=OPENAI_JSON)
    return Response(err.status, dumps({"error": err.message}), content_type=JSON)


def _model_from_spec(spec: Any) -> SimModel:
    """A SimModel for a configured model; family and parameter size are guessed from the name."""
    labels = " ".join((*spec.purpose, *spec.tags)).lower()
    base, _, tag = canonical_name(spec.name).rpartition(":")
    family = re.match(r"[a-z]+\d*", base.rsplit("/", 1)[-1].lower())
    params = re.search(r"(\d+(?:\.\d+)?)([bm])", tag.lower()) or re.search(r"(\d+(?:\.\d+)?)([bm])\b", base.lower())
    return SimModel(
        name=spec.name,
        size_gb=spec.size_gb,
        family=family.group(0) if family else "llama",
        parameter_size=f"{params.group(1)}{params.group(2).upper()}" if params else "7B",
        capabilities=("embedding",) if "embed" in labels else ("completion", "tools"),
        context_length=spec.default_context,
    )


def default_models() -> list[SimModel]:
    """What ``simulate`` offers without a config: a small coder, a general model, a big one and an embedder."""
    return [
        SimModel("qwen2.5-coder:7b", 4.7, family="qwen2", parameter_size="7.6B", context_length=32768),
        SimModel("llama3.2:3b", 2.0, family="llama", parameter_size="3.2B", context_length=8192),
        SimModel("qwen2.5:14b", 9.0, family="qwen2", parameter_size="14.8B", context_length=32768),
        SimModel("nomic-embed-text:latest", 0.27, family="nomic-bert", parameter_size="137M",
                 quantization_level="F16", capabilities=("embedding",), context_length=2048),
    ]


async def run_simulator(cfg: Config | None, host: str, port: int, log: Logger, **kw: Any) -> None:
    """Serve until cancelled. Without overrides it paces like a real GPU (40 tokens/s, 0.25 s per GB to load)."""
    kw.setdefault("tokens_per_second", 40.0)
    kw.setdefault("load_seconds_per_gb", 0.25)
    kw["log"] = log
    sim = OllamaSimulator.from_config(cfg, **kw) if cfg is not None else OllamaSimulator(default_models(), **kw)
    await sim.start(host, port)
    log.info("simulator_listening", url=sim.url, models=sorted(sim.models))
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
