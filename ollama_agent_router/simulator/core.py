"""The simulated Ollama's shared machinery: its models, scheduler and executor, injected faults, what tests
observe, and the steps every API's handler takes (read the body, find the model, plan the reply, run it).

The per-API modules (native, openai, anthropic, responses, catalog) are functions of a ``SimCore``; the
server module puts them behind HTTP. Errors are raised as ``SimError`` and rendered per API by the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ..http.messages import Request, Response, StreamResponse
from ..log import Logger
from .activity import Activity
from .plan import Conversation, Reply, plan_reply
from .run import Executor, Fault, SimCall, SimModel, StreamDropped
from .sched import MIB, ModelScheduler
from .wire import EMBEDDING_DIMS, SimError, canonical_name, full_name, json_kind, parse_keep_alive, status_message

RESERVED_FRACTION = 0.0043  # driver-reserved share of VRAM, as measured on the H200 fixture
THINK_LEVELS = ("low", "medium", "high", "max")


class StreamWriter(Protocol):
    """Renders one API's stream from the executor's native events."""

    def event(self, kind: str, value: Any) -> bytes:
        """A ("thinking"|"content", text) or ("tool_calls", native calls) event as wire bytes."""

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        """The closing events, once generation is done."""

    def broken(self, message: str | None) -> bytes:
        """What this API shows of a failure after the stream began (often nothing: the body just ends)."""


Handler = Callable[["SimCore", Request, dict], Awaitable["Response | StreamResponse"]]


class SimCore:
    def __init__(
        self, models: list[SimModel], *, gpu_total_mb: float = 24576, gpu_name: str = "Simulated GPU",
        num_parallel: int = 1, max_queue: int = 512, max_loaded_models: int = 3,
        load_seconds_per_gb: float = 0.0, tokens_per_second: float = 0.0, reply_tokens: int = 8,
        stream_flavour: str = "current", version: str = "0.33.0", default_keep_alive: str = "5m",
        ps_blocks_while_loading: bool = False, log: Logger | None = None, calls_kept: int = 10_000,
        shared_gpu: bool = False, record_activity: bool = False,
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
        self.default_keep_alive_s = parse_keep_alive(int(default_keep_alive) if bare else default_keep_alive)
        self.ps_blocks_while_loading = ps_blocks_while_loading
        self.log = log or Logger("warning")
        # Observation, for tests. Only the latest requests are kept: a simulator serving for days must not grow.
        self.calls: deque[dict[str, Any]] = deque(maxlen=calls_kept)
        self.loads: list[str] = []
        self.keep_alive_refreshes: list[tuple[str, str]] = []
        self.activity = Activity(record=record_activity)  # GPU time generating / loading / idle, loads
        self.sched = ModelScheduler(
            vram_bytes=int(gpu_total_mb * MIB), reserved_bytes=int(self.reserved_mb * MIB), max_queue=max_queue,
            max_loaded=max_loaded_models, log=self.log, on_load=self.loads.append, activity=self.activity,
        )
        self.peak_concurrency = self.sched.peak
        self.in_flight = self.sched.in_flight
        self.run = Executor(self.sched, num_parallel=self.num_parallel, load_seconds_per_gb=load_seconds_per_gb,
                            tokens_per_second=tokens_per_second, shared_gpu=shared_gpu)
        self.rng = random.Random()
        self._faults: dict[str, list[list[Any]]] = {}  # key -> [[fault, remaining uses], ...]
        # Newest first, an hour apart, so /api/tags lists models in the order given.
        base = time.time_ns() - 86_400 * 10**9
        self.modified = {m.canonical: base - i * 3_600 * 10**9 for i, m in enumerate(models)}

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

    async def plain_fault(self, req: Request) -> None:
        """A fault injected for a path that runs no model (``/api/ps``, ``/api/version``…)."""
        await self._fault_head(self._take_fault(req.path), None)

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

    # ---- request steps ----------------------------------------------------------------------------------
    async def body(self, req: Request, call: dict) -> dict[str, Any]:
        """The request's JSON object, with Go's decoder messages for what it cannot read."""
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
            raise SimError(400, f"json: cannot unmarshal {json_kind(body)} into Go value of type api.Request")
        call["body"] = body
        if isinstance(body.get("model"), str):
            call["model"] = body["model"]
        return body

    def lookup(self, body: dict[str, Any], key: str = "model") -> tuple[SimModel, str]:
        sent = body.get(key)
        if not isinstance(sent, str) or not sent:
            raise SimError(400, "model is required")
        model = self.models.get(canonical_name(sent))
        if model is None:
            raise SimError(404, f"model '{sent}' not found")
        return model, sent

    def keep_alive(self, body: dict[str, Any]) -> float | None:
        value = body.get("keep_alive")
        return self.default_keep_alive_s if value is None else parse_keep_alive(value)

    async def job(self, req: Request, body: dict[str, Any], keep_alive: float | None) -> SimCall:
        """Resolve the model, apply any injected fault's head part, and start the clock."""
        t0 = time.perf_counter_ns()
        model, sent = self.lookup(body)
        fault = self._take_fault(req.path, model.canonical, "*")
        await self._fault_head(fault, sent)
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        num_ctx = options.get("num_ctx")
        num_ctx = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else model.context_length
        return SimCall(model, sent, keep_alive, num_ctx, fault, t0)

    def check_generative(self, job: SimCall, api: str) -> None:
        if job.model.embeds:
            raise SimError(400, f'"{job.sent}" does not support {api}')

    def require(self, model: SimModel, capability: str) -> None:
        if capability not in model.capabilities:
            raise SimError(400, f"{full_name(model.canonical)} does not support {capability}")

    def think(self, value: Any, job: SimCall, relax: bool = False) -> bool:
        """Whether the model thinks: by default when it can. ``relax`` drops a request the model cannot honour
        instead of refusing it, as Ollama's Anthropic layer does."""
        if value is None:
            return "thinking" in job.model.capabilities
        if value is not True and value is not False and value not in THINK_LEVELS:
            raise SimError(400, f'invalid think value: "{value}" (must be "high", "medium", "low", true, or false)')
        on = value is not False
        if on and "thinking" not in job.model.capabilities:
            if relax:
                return False
            raise SimError(400, f'"{job.sent}" does not support thinking')
        return on

    def plan(self, job: SimCall, conv: Conversation, *, think: Any, num_predict: int | None, api: str = "chat",
             relax_thinking: bool = False) -> None:
        """Check the model can do what the request asks (as Ollama's handler does), then plan its reply."""
        self.check_generative(job, api)
        if conv.tools:
            self.require(job.model, "tools")
        if conv.images:
            self.require(job.model, "vision")
        job.reply = plan_reply(conv, model=job.sent, think=self.think(think, job, relax_thinking),
                               num_predict=num_predict, reply_tokens=self.reply_tokens, rng=self.rng)

    async def embed(self, job: SimCall, texts: list[str], dimensions: Any,
                    normalise: bool) -> tuple[list[list[float]], dict[str, int]]:
        self.require(job.model, "embedding")
        dims = dimensions if isinstance(dimensions, int) and 0 < dimensions <= EMBEDDING_DIMS else EMBEDDING_DIMS
        return await self.run.embed(job, texts, dims, normalise)

    # ---- replies ----------------------------------------------------------------------------------------
    async def stream(self, job: SimCall, writer: StreamWriter, content_type: str) -> StreamResponse:
        """Take a slot (so queueing and load errors still come back as plain errors), then stream the reply."""
        lease = await self.run.acquire(job)
        reply = job.reply
        assert reply is not None

        async def chunks() -> AsyncIterator[bytes]:
            async for kind, value in self.run.generate(job, lease):
                if kind == "done":
                    for chunk in writer.finish(reply, value):
                        yield chunk
                elif kind == "error":
                    yield writer.broken(value)
                else:
                    yield writer.event(kind, value)
        return StreamResponse(200, self.run.guard(lease, job.fault, chunks()), content_type=content_type)

    def respond(self, job: SimCall, response: Response) -> Response | StreamResponse:
        """A non-streamed reply; a drop fault sends half the body, then aborts the connection."""
        fault = job.fault
        if fault is None or fault.drop_after_chunks is None:
            return response
        body = response.body

        async def half() -> AsyncIterator[bytes]:
            yield body[: len(body) // 2]
            raise StreamDropped("injected fault: connection dropped mid-body")
        return StreamResponse(response.status, half(), content_type=response.content_type)
