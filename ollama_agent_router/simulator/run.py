"""Running one simulated inference: a runner slot from the scheduler, paced tokens, injected stream faults.

The ``Executor`` owns the lease of every request from slot to release, however the request ends: finished,
client gone (counted in ``cancelled``), connection dropped by an injected fault, or the server going down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from .plan import Reply, token_count
from .sched import GB, LOADED_OVERHEAD, ModelScheduler, QueueFull, Runner
from .wire import BUSY, EMBEDDING_DIMS, MIDSTREAM_ERROR, SimError, canonical_name, embedding, unit

PROMPT_SPEEDUP = 20  # prompt tokens are processed this many times faster than tokens are generated


@dataclass
class SimModel:
    name: str  # a name without a tag is listed as "<name>:latest"
    size_gb: float  # on disk; loaded size is about 15 % larger (KV cache and compute graph)
    family: str = "llama"
    parameter_size: str = "7B"
    quantization_level: str = "Q4_K_M"
    capabilities: tuple[str, ...] = ("completion", "tools")
    context_length: int = 4096
    tokens_per_second: float = 0.0  # this model's generation rate; 0: the simulator's rate

    @property
    def canonical(self) -> str:
        return canonical_name(self.name)

    @property
    def embeds(self) -> bool:
        return "embedding" in self.capabilities


@dataclass
class Fault:
    """A misbehaviour for the next ``times`` requests naming a model (``None`` = until cleared)."""

    status: int | None = None  # answer with this status before any byte, with Ollama's error body
    message: str | None = None  # that error's text; Ollama's own text for the status when absent
    first_byte_delay_s: float = 0  # wait this long before the response head
    drop_after_chunks: int | None = None  # abort the connection after N streamed chunks (mid-body when not streamed)
    no_done: bool = False  # end the stream cleanly, without done:true or [DONE]
    mid_stream_error: str | None = None  # native: an {"error"} line then the end; OpenAI: §2.4 (no [DONE])
    times: int | None = 1

    @property
    def breaks_stream(self) -> bool:
        return self.no_done or self.mid_stream_error is not None


class StreamDropped(Exception):
    """Raised inside a response stream so the server aborts the connection (an injected fault)."""


@dataclass(eq=False)
class SimCall:
    """One inference request, whichever API it came through."""

    model: SimModel
    sent: str  # the model name as the client sent it: replies echo it
    keep_alive: float | None
    num_ctx: int
    fault: Fault | None
    t0: int  # perf_counter_ns at arrival
    reply: Reply | None = None
    stream: bool = False


@dataclass(eq=False)
class Lease:
    runner: Runner
    load_ns: int  # arrival until the slot was ours: queue wait plus load, Ollama's load_duration
    epoch: int


class Executor:
    def __init__(self, sched: ModelScheduler, *, num_parallel: int, load_seconds_per_gb: float,
                 tokens_per_second: float, shared_gpu: bool = False) -> None:
        self.sched = sched
        self.num_parallel = num_parallel
        self.load_seconds_per_gb = load_seconds_per_gb
        self.tokens_per_second = tokens_per_second
        # Shared: requests generating at the same time split the GPU (each goes at its rate over their
        # number), as decoding is bound by memory bandwidth; otherwise each runs at its full rate.
        self.shared_gpu = shared_gpu
        self.cancelled = 0  # requests whose client went away while queued or generating
        self.epoch = 0  # bumped when the server goes down, so the requests it cuts are not counted as cancelled

    async def attach(self, job: SimCall) -> Runner:
        model = job.model
        epoch = self.epoch
        try:
            return await self.sched.attach(
                model.canonical, size=int(model.size_gb * GB * LOADED_OVERHEAD),
                load_s=model.size_gb * self.load_seconds_per_gb, slots=1 if model.embeds else self.num_parallel,
                keep_alive=job.keep_alive, num_ctx=job.num_ctx,
            )
        except QueueFull:
            raise SimError(503, BUSY) from None
        except asyncio.CancelledError:
            self._count_cancel(epoch)
            raise

    async def acquire(self, job: SimCall) -> Lease:
        """A runner and one of its slots."""
        runner = await self.attach(job)
        epoch = self.epoch
        try:
            await self.sched.take_slot(runner)
        except QueueFull:
            self.sched.detach(runner)
            raise SimError(503, BUSY) from None
        except asyncio.CancelledError:
            self.sched.detach(runner)
            self._count_cancel(epoch)
            raise
        return Lease(runner, time.perf_counter_ns() - job.t0, epoch)

    def release(self, lease: Lease, cancelled: bool) -> None:
        self.sched.free_slot(lease.runner)
        self.sched.detach(lease.runner)
        if cancelled:
            self._count_cancel(lease.epoch)

    def _count_cancel(self, epoch: int) -> None:
        if epoch == self.epoch:
            self.cancelled += 1

    async def generate(self, job: SimCall, lease: Lease) -> AsyncIterator[tuple[str, Any]]:
        """Native events in order: ("thinking"|"content", text), ("tool_calls", calls), then ("done", metrics),
        or ("error", message or None) halfway through when a mid-stream fault is injected."""
        reply = job.reply
        assert reply is not None
        tps = job.model.tokens_per_second or self.tokens_per_second
        t_prompt = time.perf_counter_ns()
        if tps > 0 and reply.prompt_tokens:
            await asyncio.sleep(self._share(reply.prompt_tokens / (tps * PROMPT_SPEEDUP)))
        t_eval = time.perf_counter_ns()
        pieces: list[tuple[str, Any]] = [("thinking", t) for t in reply.thinking]
        pieces += [("content", t) for t in reply.content]
        if reply.tool_calls:
            pieces.append(("tool_calls", reply.tool_calls))
        fault = job.fault
        broken = fault is not None and fault.breaks_stream
        for piece in pieces[: (len(pieces) + 1) // 2] if broken else pieces:
            if tps > 0:
                await asyncio.sleep(self._share(1 / tps))
            yield piece
        if fault is not None and broken:
            yield "error", fault.mid_stream_error
            return
        t_end = time.perf_counter_ns()
        yield "done", {
            "total_duration": t_end - job.t0,
            "load_duration": lease.load_ns,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": max(1, t_eval - t_prompt) if reply.prompt_tokens else 0,
            "eval_count": reply.eval_count,
            "eval_duration": max(1, t_end - t_eval) if reply.eval_count else 0,
        }

    def _share(self, seconds: float) -> float:
        """How long ``seconds`` of one request's GPU work takes now."""
        return seconds * max(1, self.sched.generating()) if self.shared_gpu else seconds

    async def collect(self, job: SimCall) -> tuple[str, str, list[dict], dict[str, int]]:
        """A whole non-streamed generation: (content, thinking, tool calls, metrics); 500 on an injected error."""
        lease = await self.acquire(job)
        finished = False
        try:
            events = [event async for event in self.generate(job, lease)]
            finished = True
        finally:
            self.release(lease, cancelled=not finished)
        kind, last = events[-1]
        if kind == "error":
            raise SimError(500, last or MIDSTREAM_ERROR)
        content = "".join(v for k, v in events if k == "content")
        thinking = "".join(v for k, v in events if k == "thinking")
        calls = [c for k, v in events if k == "tool_calls" for c in v]
        return content, thinking, calls, last

    async def guard(self, lease: Lease, fault: Fault | None, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Owns the lease of a streamed reply: releases it however the stream ends, and applies drop faults."""
        outcome = "cancelled"
        try:
            async with aclosing(chunks):
                sent = 0
                async for chunk in chunks:
                    if fault is not None and fault.drop_after_chunks is not None and sent >= fault.drop_after_chunks:
                        outcome = "dropped"
                        raise StreamDropped(f"injected fault: connection dropped after {sent} chunks")
                    yield chunk
                    sent += 1
            outcome = "done"
        finally:
            self.release(lease, cancelled=outcome == "cancelled")

    async def embed(self, job: SimCall, texts: list[str], dims: int,
                    normalise: bool) -> tuple[list[list[float]], dict[str, int]]:
        """Vectors for ``texts`` (cut to ``dims``) and the metrics an embed reply carries."""
        tokens = sum(token_count(t) for t in texts)
        lease = await self.acquire(job)
        finished = False
        try:
            if self.tokens_per_second > 0:
                await asyncio.sleep(tokens / (self.tokens_per_second * PROMPT_SPEEDUP))
            vectors = [embedding(job.model.canonical, t, EMBEDDING_DIMS, normalise)[:dims] for t in texts]
            if normalise and dims < EMBEDDING_DIMS:
                vectors = [unit(v) for v in vectors]
            finished = True
        finally:
            self.release(lease, cancelled=not finished)
        if job.fault is not None and job.fault.breaks_stream:
            raise SimError(500, job.fault.mid_stream_error or MIDSTREAM_ERROR)
        metrics = {"total_duration": time.perf_counter_ns() - job.t0, "load_duration": lease.load_ns,
                   "prompt_eval_count": tokens}
        return vectors, metrics
