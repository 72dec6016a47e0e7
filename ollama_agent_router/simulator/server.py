"""A simulated Ollama server: the native API, the OpenAI layer, Anthropic Messages, OpenAI Responses and the
scheduler, over real HTTP.

Users run it with ``ollama-agent-router simulate`` (or ``serve --simulate``); every test and benchmark uses
it as the stand-in for Ollama. Replies are deterministic and cheap. Faults can be injected per model to
exercise a router's failure handling, and the observation fields (``calls``, ``peak_concurrency``…) let
tests check what reached "Ollama". Shapes and texts follow shared/spec/wire-formats.md.

This module is the route table and the server's life; each API lives in its own module, all built on
``core.SimCore``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any, Mapping

from ..config.schema import Config, ModelSpec, can_think, is_embedding_model
from ..gpu import GpuDevice
from ..http.messages import JSON, Request, Response, ServerLimits, StreamResponse
from ..http.server import HttpServer
from ..jsonutil import dumps
from ..log import Logger
from . import anthropic, catalog, native, openai, responses
from .core import Handler, SimCore
from .run import SimModel
from .sched import MIB
from .wire import OPENAI_JSON, SimError, canonical_name, digest

__all__ = ["OllamaSimulator", "SimulatedGpu", "default_models", "run_simulator"]

_ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": catalog.root, "HEAD": catalog.root},
    "/api/version": {"GET": catalog.version, "HEAD": catalog.version},
    "/api/tags": {"GET": catalog.tags, "HEAD": catalog.tags},
    "/api/ps": {"GET": catalog.ps},
    "/api/show": {"POST": catalog.show},
    "/api/chat": {"POST": native.chat},
    "/api/generate": {"POST": native.generate},
    "/api/embed": {"POST": native.embed},
    "/api/embeddings": {"POST": native.embeddings},
    "/v1/chat/completions": {"POST": openai.chat},
    "/v1/completions": {"POST": openai.completions},
    "/v1/embeddings": {"POST": openai.embeddings},
    "/v1/models": {"GET": catalog.v1_models},
    "/v1/messages": {"POST": anthropic.messages},
    "/v1/responses": {"POST": responses.responses},
}
_V1_MODEL = {"GET": catalog.v1_model}


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


class OllamaSimulator(SimCore):
    """The shared machinery (``SimCore``) behind a real HTTP listener that can go down and come back."""

    def __init__(self, models: list[SimModel], **kw: Any) -> None:
        super().__init__(models, **kw)
        self.url = ""
        self.port = 0
        self._host = "127.0.0.1"
        self._http: HttpServer | None = None
        self._transition: asyncio.Task | None = None

    @classmethod
    def from_config(cls, cfg: Config, *, rates: Mapping[str, float] | None = None, **kw: Any) -> OllamaSimulator:
        """Models from ``cfg.models`` (capabilities from their labels), VRAM from ``cfg.gpu``; ``rates`` gives
        some models their own tokens per second."""
        rates = rates or {}
        models = [_model_from_spec(spec, rates.get(spec.name, 0.0)) for spec in cfg.models]
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

    def gpu_backend(self) -> SimulatedGpu:
        return SimulatedGpu(self)

    # ---- dispatch ---------------------------------------------------------------------------------------
    async def _handle(self, req: Request) -> Response | StreamResponse:
        call: dict[str, Any] = {"path": req.path, "query": req.query, "headers": req.headers, "method": req.method,
                                "model": None, "body": None, "t": time.monotonic(), "status": None}
        self.calls.append(call)
        try:
            response = await self._dispatch(req, call)
        except SimError as e:
            response = _error_response(req.path, e, self.rng)
        except asyncio.CancelledError:
            call["status"] = 499
            raise
        call["status"] = response.status
        return response

    async def _dispatch(self, req: Request, call: dict) -> Response | StreamResponse:
        methods = _ROUTES.get(req.path)
        if methods is None and req.path.startswith("/v1/models/"):
            methods = _V1_MODEL
        if methods is None:
            return Response(404, b"404 page not found", content_type="text/plain")
        handler = methods.get(req.method)
        if handler is None:
            return Response(405, b"405 method not allowed", content_type="text/plain")
        return await handler(self, req, call)


# ---- helpers ----------------------------------------------------------------------------------------------------

def _error_response(path: str, err: SimError, rng: random.Random) -> Response:
    """An error before any byte of the reply, in the shape of the API it came in on."""
    if path == "/v1/messages":
        body = anthropic.anthropic_error(err.status, err.message, "req_" + anthropic.hex_id(rng))
        return Response(err.status, dumps(body) + b"\n", content_type=OPENAI_JSON)
    if path.startswith("/v1/"):
        body = openai.openai_error(err.status, err.message)
        return Response(err.status, dumps(body) + b"\n", content_type=OPENAI_JSON)
    return Response(err.status, dumps({"error": err.message}), content_type=JSON)


def _capabilities(spec: ModelSpec) -> tuple[str, ...]:
    """The labels the router reads make the same capabilities here: an embedding model, or one that can
    think (as gpt-oss can), which clients asking for reasoning effort need."""
    if is_embedding_model(spec):
        return ("embedding",)
    if can_think(spec):
        return ("completion", "tools", "thinking")
    return ("completion", "tools")


def _model_from_spec(spec: ModelSpec, tokens_per_second: float = 0.0) -> SimModel:
    """A SimModel for a configured model; family and parameter size are guessed from the name."""
    base, _, tag = canonical_name(spec.name).rpartition(":")
    family = re.match(r"[a-z]+\d*", base.rsplit("/", 1)[-1].lower())
    params = re.search(r"(\d+(?:\.\d+)?)([bm])", tag.lower()) or re.search(r"(\d+(?:\.\d+)?)([bm])\b", base.lower())
    return SimModel(
        name=spec.name,
        size_gb=spec.size_gb,
        family=family.group(0) if family else "llama",
        parameter_size=f"{params.group(1)}{params.group(2).upper()}" if params else "7B",
        capabilities=_capabilities(spec),
        context_length=spec.default_context,
        tokens_per_second=tokens_per_second,
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
