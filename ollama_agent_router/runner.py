"""The routed runner: every front door's requests, and every async job, run here and nowhere else.

A door turns its wire format into a ``Call`` (which upstream path, which body per model, which models in
which order, how long it may wait and run, whether to relay a stream) and a ``Renderer`` (how the result
goes back in its wire format). The runner does the rest, once for all of them:

- the slot: a place in the model's queue (``scheduler.acquire``), released on every path;
- the upstream call, and failover to the next model on a model failure before any byte reached the client
  (the decision is ``failover.after_attempt``; cooldown timers live here);
- the error mapping: no slot in time is 503 ``queue_timeout``, a queue limit 429, Ollama's timeouts 504;
- the reply: one JSON body, or a relay of SSE/NDJSON events as they arrive;
- metrics and the access log's fields.

``route`` is the step before: classify the request and decide against the live snapshot, keeping an agent
conversation on its model (``sessions``) and off models too small for it (``fit``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

from .classifier import Classification, ClassifierSettings, classify
from .config.schema import Config
from .errors import HttpError
from .events import DecisionEvent, EventHub
from .failover import Cooldowns, after_attempt
from .fit import context_need
from .http.messages import Response, StreamResponse
from .jsonutil import JsonObject, dumps, splice_members, usage_figures
from .log import Logger
from .metrics import Metrics
from .options import RouterMeta
from .relay import StreamFormat, StreamStats, relay
from .routing import Decision, RoutingTable, RuntimeView, decide
from .scheduler import Scheduler, Slot
from .sessions import Key, Sessions, conversation_hash, explicit_key
from .snapshot import Snapshot
from .upstream import (
    OllamaClient,
    UpstreamError,
    UpstreamResponse,
    check_json_document,
    json_or_raw,
    upstream_error_message,
    upstream_http_error,
)
from .waiting import WaitTimeout, acquire


@dataclass(slots=True)  # not frozen: a frozen dataclass pays a setattr per field, and this is per request
class Attempt:
    model: str
    outcome: str  # ok | connect | timeout | closed | http_<status>
    detail: str = ""

    def to_json(self) -> dict:
        out = {"model": self.model, "outcome": self.outcome}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Exchange:
    """An upstream exchange whose reply head has arrived, holding its model slot until ``finish``."""

    model: str
    response: UpstreamResponse
    slot: Slot
    started: float  # perf_counter at send
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def queue_ms(self) -> int:
        return self.slot.queue_ms

    def execution_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def attempts_json(self) -> list[dict] | None:
        """The attempts, when there was more than one (a failover happened)."""
        return [a.to_json() for a in self.attempts] if len(self.attempts) > 1 else None

    def finish(self) -> None:
        self.response.close()
        self.slot.release()


class DecisionRecord(NamedTuple):
    """What ``/v1/router/route`` shows of a decision, without the request's text: the classification, the
    decision with every score part, and the runtime view it was made against (a copy)."""

    classification: Classification
    decision: Decision
    pinned: str | None
    view: RuntimeView
    meta: RouterMeta  # the request's routing options (models it forbade, ...): no text of the request
    context_tokens: int = 0  # the context it needed (fit.context_need)


@dataclass(slots=True)  # not frozen: one per request, and frozen construction costs a setattr per field
class Routed:
    """A classified and decided request, before it runs."""

    body: dict
    meta: RouterMeta
    classification: Classification
    decision: Decision
    pinned: str | None = None
    record: DecisionRecord | None = None  # kept when asked to explain, or while the live feed is watched
    session: Key | None = None  # the conversation it belongs to (sticky routing)
    sticky: str | None = None  # that conversation's model when it was routed
    context_tokens: int = 0  # the context it needs (fit.context_need)

    def models(self) -> list[str]:
        """The chosen model, then the failover order."""
        assert self.decision.model is not None
        return [self.decision.model, *self.decision.failover_order()]


@dataclass(slots=True)
class Call:
    """One request to run on a model, as a front door hands it to the runner."""

    path: str  # the upstream path
    body_for: Callable[[str], bytes]  # the upstream body for a model
    models: Sequence[str]  # the chosen model first, then the failover order
    priority: str
    user: str | None  # whom the per-user queue limit counts against (None: nobody)
    max_wait_ms: int | None  # the longest wait for a slot (None: up to the model's timeoutMs)
    timeout_ms: int | None  # the client's execution budget (None: the model's timeoutMs, which also caps it)
    stream: StreamFormat | None = None  # relay the reply in this format (None: one JSON reply)
    failover: bool = True
    api: str = "openai"  # the door it came in by: openai | ollama | anthropic | responses | kong | job
    headers: tuple[tuple[str, str], ...] = ()  # client headers passed on to Ollama (anthropic-version, ...)
    plane: str = "standalone"  # metrics labels
    task: str | None = None
    log: dict[str, Any] = field(default_factory=dict)  # the access log line's fields
    reason: str = ""  # why this model: the decision's short reason, for the live feed
    record: DecisionRecord | None = None  # the decision's explanation inputs, for the live feed
    session: Key | None = None  # the conversation whose model becomes the one that answers


class Renderer(Protocol):
    """How a door puts the result into its wire format."""

    def headers(self, ex: Exchange) -> list[tuple[str, str]]: ...

    def prelude(self, ex: Exchange) -> bytes:
        """Bytes that open a stream, before the first upstream event (an SSE comment, or nothing)."""

    def body(self, raw: bytes, ex: Exchange) -> bytes:
        """The JSON reply from Ollama's JSON reply."""


_NOT_FORWARDED = frozenset({"router"})


def forward_body(body: dict, model: str, *, default_stream: bool | None = False,
                 without: frozenset[str] = frozenset(), also: dict[str, Any] | None = None) -> bytes:
    """The client body for Ollama: ``model`` replaced (and the members in ``also`` set), ``router`` (and the
    members in ``without``) removed, everything else kept as sent.

    An absent ``stream`` becomes ``default_stream``; None leaves it absent (native APIs stream by default,
    embedding APIs have no such field).
    """
    changes: dict[str, Any] = {"model": model, **(also or {})}
    if default_stream is not None and "stream" not in body:
        changes["stream"] = default_stream
    dropped = _NOT_FORWARDED | without
    if isinstance(body, JsonObject):
        return splice_members(body, changes, dropped)
    out = {k: v for k, v in body.items() if k not in dropped}
    out.update(changes)
    return dumps(out)


def queue_timeout(model: str, wait_ms: int | None) -> HttpError:
    return HttpError(503, f"{model} has no free slot within {wait_ms} ms", code="queue_timeout",
                     headers=[("Retry-After", "1")])


class Runner:
    def __init__(self, cfg: Config, table: RoutingTable, scheduler: Scheduler, client: OllamaClient,
                 snapshot: Snapshot, metrics: Metrics, log: Logger, events: EventHub, sessions: Sessions) -> None:
        self.cfg = cfg
        self.events = events
        self.sessions = sessions
        self.table = table
        self.scheduler = scheduler
        self.client = client
        self.snapshot = snapshot
        self.metrics = metrics
        self.log = log
        self.settings = ClassifierSettings(
            large_context_tokens=cfg.router.classification.large_context_tokens,
            min_confidence=cfg.router.classification.min_confidence,
            default_task_type=cfg.router.default_task_type,
        )
        self.cooldowns = Cooldowns(max(1, cfg.router.failover.cooldown_failures))
        self._cooldown_timers: dict[str, asyncio.TimerHandle] = {}

    # ---- deciding -------------------------------------------------------------------------------
    def pin(self, model: Any) -> str | None:
        """A client ``model`` naming a configured model (or alias) pins it; ``auto`` or unknown names route."""
        if not isinstance(model, str) or not model or model == "auto":
            return None
        resolved = self.table.resolve(model)
        if resolved is None and self.cfg.router.unknown_model == "reject":
            raise HttpError(404, f"Unknown model: {model}. Use \"auto\" or one of the configured models.",
                            code="model_not_found")
        return resolved

    def view(self) -> RuntimeView:
        return RuntimeView(self.snapshot.gpu_free_mb, self.scheduler.total_waiting, self.scheduler.states)

    def route(self, body: dict, meta: RouterMeta, *, pinned: str | None = None, explain: bool = False,
              client: dict | None = None, headers: Mapping[str, str] | None = None) -> Routed:
        """Classify the conversation in ``body`` (``messages``, ``tools``) and decide against the live state.

        ``client`` is the body as the client sent it, where ``body`` is a door's chat-shaped reading of it: the
        tools' size, the reply length asked for and a conversation id are read there. ``headers`` may name
        the conversation too. A conversation keeps the model its last turn ran on while that model can run
        (``router.sticky``); a pinned request is routed on its own."""
        t0 = time.perf_counter()
        source = body if client is None else client
        explicit = meta.task_type if meta.task_type not in ("", "auto") else None
        tools = body.get("tools")
        tools = tools if isinstance(tools, list) else None
        key, sticky, cls = self._classify(body.get("messages") or [], tools, explicit, meta, pinned, headers, source)
        need = context_need(cls.token_estimate, source)
        keep = explain or bool(self.events.subscribers)  # a watched feed can explain each decision later
        view = self.view()
        decision = decide(meta, cls.task_type, cls.complexity, self.table, view, pinned=pinned, sticky=sticky,
                          context_tokens=need, explain=keep)
        self.metrics.decision_seconds.observe(time.perf_counter() - t0)
        record = DecisionRecord(cls, decision, pinned, view._replace(models=dict(view.models)), meta, need) if keep else None
        return Routed(body, meta, cls, decision, pinned, record, key, sticky, need)

    def _classify(self, messages: list, tools: list | None, explicit: str | None, meta: RouterMeta,
                  pinned: str | None, headers: Mapping[str, str] | None,
                  source: dict) -> tuple[Key | None, str | None, Classification]:
        """The conversation's key and model (sticky routing), and the classification: a turn of a conversation
        already routed continues its task, so a mid-loop turn is not taken for a new tool-use task."""
        sticky_on = meta.sticky and pinned is None
        key = explicit_key(headers or {}, source) if sticky_on else None
        sticky = self.sessions.model(key)
        cls = classify(messages, tools, explicit, self.settings, continuing=sticky is not None)
        if key is None and sticky_on and cls.harness:
            key = conversation_hash(messages)
            sticky = self.sessions.model(key)
            if sticky is not None and cls.mid_loop:  # known after all: the loop works on the user's ask
                cls = classify(messages, tools, explicit, self.settings, continuing=True)
        return key, sticky, cls

    # ---- running for a client -------------------------------------------------------------------
    async def run(self, call: Call, render: Renderer,
                  on_queue_timeout: Callable[[], Response] | None = None) -> Response | StreamResponse:
        """Run ``call`` now: one JSON reply, or a relayed stream. ``on_queue_timeout`` answers instead of
        the 503 when no slot came in time (the chat door accepts the request as a job)."""
        started = time.perf_counter()
        try:
            try:
                ex = await self._open(call)
            except WaitTimeout:
                if on_queue_timeout is not None:
                    return on_queue_timeout()
                raise queue_timeout(call.models[0], self._wait_ms(call, call.models[0])) from None
            call.log["model"] = ex.model
            if call.stream is not None and ex.response.status < 400:
                return self._relay(call, ex, render, started)
            raw = await self._read(ex)
        except HttpError as e:
            self.count(call.plane, call.task, None, "sync", e.status, started, api=call.api,
                       reason=f"{e.code} on {call.models[0]}: {call.reason}", record=call.record)
            raise
        self.count(call.plane, call.task, ex.model, "sync", 200, started, usage=usage_figures(raw), api=call.api,
                   reason=call.reason, queue_ms=ex.queue_ms, record=call.record)
        return Response(200, render.body(raw, ex), render.headers(ex))

    def _relay(self, call: Call, ex: Exchange, render: Renderer, started: float) -> StreamResponse:
        fmt = call.stream
        assert fmt is not None
        stats = StreamStats()

        def done() -> None:
            ex.slot.release()
            status = 200 if stats.completed and not stats.error else 502
            self.count(call.plane, call.task, ex.model, "stream", status, started, stats=stats, api=call.api,
                       reason=call.reason, queue_ms=ex.queue_ms, record=call.record)

        chunks = relay(ex.response, fmt, stats, lambda: time.perf_counter() - started, on_end=done)
        return StreamResponse(200, chunks, render.headers(ex), content_type=fmt.content_type,
                              prelude=render.prelude(ex))

    def count(self, plane: str, task: str | None, model: str | None, mode: str, status: int, started: float, *,
              api: str, stats: StreamStats | None = None, usage: Any = None, reason: str = "",
              queue_ms: int = 0, record: DecisionRecord | None = None) -> None:
        """One answered request in the metrics and, while someone watches, on the live feed: the runner's
        own, and a door's answers that ran nothing (refusals, async acceptances)."""
        seconds = time.perf_counter() - started
        self.metrics.observe_request(
            plane, task, model, mode, status, seconds, api=api,
            first_byte=stats.first_byte_at if stats else None,
            usage=usage or (stats.usage if stats else None), chunks=stats.chunks if stats else 0,
        )
        if self.events.subscribers:
            self.events.publish(DecisionEvent(api, plane, task, model, mode, status, queue_ms, seconds * 1000,
                                              reason, time.time(), record))

    # ---- running for a job ------------------------------------------------------------------------
    async def complete(self, call: Call, slot: Slot) -> bytes:
        """Run a job's request on the slot the scheduler started it with; the whole reply's bytes."""
        return await self._read(await self._open(call, slot))

    # ---- the exchange -----------------------------------------------------------------------------
    async def _open(self, call: Call, slot: Slot | None = None) -> Exchange:
        """Take a slot and send, moving on to the next model while ``failover.after_attempt`` says so.

        ``slot``, when given, is a slot already held on ``models[0]`` (a job the scheduler started).
        """
        tries = list(call.models[: max(1, self.cfg.router.failover.max_attempts)] if call.failover else call.models[:1])
        attempts: list[Attempt] = []
        last: HttpError | None = None
        for i, model in enumerate(tries):
            has_next = i + 1 < len(tries)
            if slot is None or i > 0:
                wait = self._wait_ms(call, model) / 1000
                slot = await acquire(self.scheduler, model, call.priority, user=call.user, max_wait=wait)
            started = time.perf_counter()
            try:
                resp = await self._send(call, model)
            except UpstreamError as e:
                slot.release()
                attempts.append(Attempt(model, e.kind, e.message))
                last = e.to_http(self.client.display_url)
                if self._after(model, e.kind, 0, has_next):
                    continue
                break
            except BaseException:
                slot.release()
                raise
            if self._after(model, "ok", resp.status, has_next):
                payload = await self._drain(resp)
                slot.release()
                outcome = f"http_{resp.status}"
                attempts.append(Attempt(model, outcome, upstream_error_message(payload, resp.status)))
                last = upstream_http_error(resp.status, payload)
                continue
            if attempts:
                self.metrics.failovers.inc(attempts[-1].model, model)
            if call.session is not None and resp.status < 400:
                self.sessions.remember(call.session, model)  # the conversation's cache now lives on this model
            attempts.append(Attempt(model, "ok" if resp.status < 400 else f"http_{resp.status}"))
            self.metrics.queue_seconds.observe(slot.queue_ms / 1000, model)
            return Exchange(model, resp, slot, started, attempts)
        assert last is not None
        if len(attempts) > 1:
            last.extra = {**(last.extra or {}), "attempts": [a.to_json() for a in attempts]}
        raise last

    def _wait_ms(self, call: Call, model: str) -> int:
        return self.table.models[model].timeout_ms if call.max_wait_ms is None else call.max_wait_ms

    async def _send(self, call: Call, model: str) -> UpstreamResponse:
        """Send to ``model``. The whole exchange is bounded by the model's ``timeoutMs`` (or the client's
        shorter budget). Only a stream has a first-byte deadline, its time to the first token: a JSON reply's
        first byte comes when generation ends, so that wait is the whole generation."""
        limit = self.table.models[model].timeout_ms
        if call.timeout_ms is not None:
            limit = min(limit, call.timeout_ms)
        first_byte = self.cfg.ollama.first_byte_timeout_ms / 1000 if call.stream is not None else None
        return await self.client.request("POST", call.path, call.body_for(model), timeout=limit / 1000,
                                         first_byte_timeout=first_byte, headers=call.headers)

    def _after(self, model: str, outcome: str, status: int, has_next: bool) -> bool:
        """Apply the failover decision's effects; True when the next model should be tried."""
        step = after_attempt(outcome, status, has_next=has_next)
        if outcome != "ok" or step.retry:
            self.metrics.upstream_errors.inc(model, outcome if outcome != "ok" else f"http_{status}")
        if step.ollama_down:
            self.snapshot.poke()
        elif step.failed:
            if self.cooldowns.failed(model):
                self._cool_down(model)
        else:
            self.cooldowns.succeeded(model)
        return step.retry

    @staticmethod
    async def _drain(resp: UpstreamResponse) -> Any:
        """The error body of a reply we fail over from (best effort: it only feeds the message)."""
        try:
            return json_or_raw(await resp.read())
        except UpstreamError:
            return {}
        finally:
            resp.close()

    async def _read(self, ex: Exchange) -> bytes:
        """Read a whole upstream reply; an upstream error status becomes the matching HttpError, and so does
        a reply over ``ollama.maxReplyBytes`` or a success that is not JSON."""
        try:
            data = await ex.response.read()
            if ex.response.status < 400:
                check_json_document(data)
        except UpstreamError as e:
            self.metrics.upstream_errors.inc(ex.model, e.kind)
            raise e.to_http(self.client.display_url) from None
        finally:
            ex.finish()
        if ex.response.status >= 400:
            err = upstream_http_error(ex.response.status, json_or_raw(data))
            attempts = ex.attempts_json()
            if attempts:
                err.extra = {**(err.extra or {}), "attempts": attempts}
            raise err
        return data

    # ---- cooldown timers ------------------------------------------------------------------------
    def _cool_down(self, model: str) -> None:
        """``failover.cooldownFailures`` failures in a row: the model sits out ``cooldownMs``."""
        seconds = self.cfg.router.failover.cooldown_ms / 1000
        self.scheduler.set_cooldown(model, self.scheduler.clock() + seconds)
        self.metrics.cooldowns.inc(model)
        self.log.warning("model_cooldown", model=model, cooldownMs=self.cfg.router.failover.cooldown_ms)
        old = self._cooldown_timers.pop(model, None)
        if old is not None:
            old.cancel()
        self._cooldown_timers[model] = asyncio.get_running_loop().call_later(seconds, self._cooled_down, model)

    def _cooled_down(self, model: str) -> None:
        del self._cooldown_timers[model]
        self.scheduler.set_cooldown(model, None)
        self.log.info("model_cooldown_over", model=model)

    def stop(self) -> None:
        for timer in self._cooldown_timers.values():
            timer.cancel()
        self._cooldown_timers.clear()
