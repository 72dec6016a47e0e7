"""The routed execution path: classify, decide, take a slot, call Ollama (failing over), answer or stream.

Handlers for every front door (OpenAI, Ollama-native, Kong's execute) and the job runner meet here,
so queueing, timeouts, failover, cooldown and metrics behave the same whichever way a request came in.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .classifier import Classification, ClassifierSettings, classify
from .errors import HttpError
from .jsonutil import JsonObject, add_member, dumps, splice_members
from .relay import StreamStats
from .routing import Decision, RouterMeta, RuntimeView, decide
from .scheduler import Slot
from .upstream import UpstreamError, UpstreamResponse, json_or_raw, upstream_error_message

if TYPE_CHECKING:
    from .app import App

_FAILOVER_STATUSES = frozenset({500, 502, 503, 504})


@dataclass
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
    queue_ms: int
    started: float  # perf_counter at send
    attempts: list[Attempt] = field(default_factory=list)

    def execution_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def finish(self) -> None:
        self.response.close()
        self.slot.release()


@dataclass
class Routed:
    """A classified and decided request, before it runs."""

    body: dict
    meta: RouterMeta
    classification: Classification
    decision: Decision
    pinned: str | None = None


def upstream_http_error(status: int, payload: Any) -> HttpError:
    """Relay an Ollama error with its own message: 4xx keep their status, 503 stays 503, other 5xx become 502."""
    message = upstream_error_message(payload, status)
    extra = {"upstreamStatus": status}
    if status == 503:
        return HttpError(503, message, code="upstream_busy", headers=[("Retry-After", "2")], extra=extra)
    if status >= 500:
        return HttpError(502, message, code="upstream_error", extra=extra)
    code = "model_not_found" if status == 404 else "upstream_rejected"
    return HttpError(status, message, code=code, extra=extra)


def validate_chat_body(body: Any) -> dict:
    """The original's chat schema (§2.3), with readable messages instead of a zod dump."""
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "messages must be a non-empty array", code="invalid_messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise HttpError(400, f"messages[{i}] must be an object with a string role", code="invalid_messages")
    if "model" in body and not isinstance(body["model"], str):
        raise HttpError(400, "model must be a string", code="invalid_body")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise HttpError(400, "stream must be a boolean", code="invalid_body")
    if "router" in body and not isinstance(body["router"], dict):
        raise HttpError(400, "router must be an object", code="invalid_router_options")
    return body


_NOT_FORWARDED = frozenset({"router"})


def forward_body(body: dict, model: str, *, default_stream: bool | None = False) -> bytes:
    """The client body for Ollama: ``model`` replaced, ``router`` removed, everything else kept as sent.

    An absent ``stream`` becomes ``default_stream``; None leaves it absent (native APIs stream by default,
    embedding APIs have no such field).
    """
    changes: dict[str, Any] = {"model": model}
    if default_stream is not None and "stream" not in body:
        changes["stream"] = default_stream
    if isinstance(body, JsonObject):
        return splice_members(body, changes, _NOT_FORWARDED)
    out = {k: v for k, v in body.items() if k not in _NOT_FORWARDED}
    out.update(changes)
    return dumps(out)


class Service:
    def __init__(self, app: "App") -> None:
        self.app = app
        cfg = app.cfg
        self.cfg = cfg
        self.settings = ClassifierSettings(
            large_context_tokens=cfg.router.classification.large_context_tokens,
            min_confidence=cfg.router.classification.min_confidence,
            default_task_type=cfg.router.default_task_type,
        )
        self._failures: dict[str, int] = {}
        self._cooldown_timers: dict[str, asyncio.TimerHandle] = {}

    # ---- routing ------------------------------------------------------------------------------
    def pin(self, model: Any) -> str | None:
        """A client ``model`` naming a configured model (or alias) pins it; ``auto`` or unknown names route."""
        if not isinstance(model, str) or not model or model == "auto":
            return None
        resolved = self.app.table.resolve(model)
        if resolved is None and self.cfg.router.unknown_model == "reject":
            raise HttpError(404, f"Unknown model: {model}. Use \"auto\" or one of the configured models.",
                            code="model_not_found")
        return resolved

    def view(self) -> RuntimeView:
        sched = self.app.scheduler
        return RuntimeView(self.app.snapshot.gpu_free_mb, sched.total_waiting, sched.states)

    def route(self, body: dict, meta: RouterMeta, *, pinned: str | None = None, explain: bool = False) -> Routed:
        t0 = time.perf_counter()
        explicit = meta.task_type if meta.task_type not in ("", "auto") else None
        tools = body.get("tools")
        cls = classify(body.get("messages") or [], tools if isinstance(tools, list) else None, explicit, self.settings)
        decision = decide(meta, cls.task_type, cls.complexity, self.app.table, self.view(),
                          pinned=pinned, explain=explain)
        self.app.metrics.decision_seconds.observe(time.perf_counter() - t0)
        return Routed(body, meta, cls, decision, pinned)

    # ---- running ------------------------------------------------------------------------------
    async def open(self, models: Sequence[str], path: str, body_for: Callable[[str], bytes], *,
                   priority: str, user: str | None, max_wait: float | None, timeout_ms: int | None,
                   failover: bool = True, slot: Slot | None = None) -> Exchange:
        """Take a slot and send, trying the next model on a model failure before any byte reached the client.

        A model failure is a 5xx (503 included: Ollama's queue is full) or a connection cut before the reply
        head. Connection refusals are Ollama-wide, so they neither fail over nor count toward a model's
        cooldown; a timeout has used up the caller's time, so it counts toward cooldown but is not retried.
        ``slot``, when given, is a slot already held on ``models[0]`` (a job started by the scheduler).
        """
        app = self.app
        tries = list(models[: max(1, self.cfg.router.failover.max_attempts)] if failover else models[:1])
        attempts: list[Attempt] = []
        last: HttpError | None = None
        for i, model in enumerate(tries):
            spec = app.table.models[model]
            if slot is None or i > 0:
                slot = await app.scheduler.acquire(model, priority, user=user, max_wait=max_wait)
            limit = spec.timeout_ms if timeout_ms is None else min(timeout_ms, spec.timeout_ms)
            started = time.perf_counter()
            try:
                resp = await app.client.request(
                    "POST", path, body_for(model), timeout=limit / 1000,
                    first_byte_timeout=self.cfg.ollama.first_byte_timeout_ms / 1000,
                )
            except UpstreamError as e:
                slot.release()
                app.metrics.upstream_errors.inc(model, e.kind)
                attempts.append(Attempt(model, e.kind, e.message))
                last = e.to_http(self.cfg.ollama.base_url)
                if e.kind == "connect":
                    app.snapshot.poke()
                    break
                self._failed(model)
                if e.kind == "timeout":
                    break
                continue
            except BaseException:
                slot.release()
                raise
            if resp.status in _FAILOVER_STATUSES and i + 1 < len(tries):
                try:
                    payload = json_or_raw(await resp.read())
                except UpstreamError:
                    payload = {}
                finally:
                    resp.close()
                slot.release()
                app.metrics.upstream_errors.inc(model, f"http_{resp.status}")
                attempts.append(Attempt(model, f"http_{resp.status}", upstream_error_message(payload, resp.status)))
                last = upstream_http_error(resp.status, payload)
                self._failed(model)
                continue
            if resp.status < 500:
                self._succeeded(model)
            else:
                self._failed(model)
            if attempts:
                app.metrics.failovers.inc(attempts[-1].model, model)
            attempts.append(Attempt(model, "ok" if resp.status < 400 else f"http_{resp.status}"))
            app.metrics.queue_seconds.observe(slot.queue_ms / 1000, model)
            return Exchange(model, resp, slot, slot.queue_ms, started, attempts)
        assert last is not None
        if len(attempts) > 1:
            last.extra = {**(last.extra or {}), "attempts": [a.to_json() for a in attempts]}
        raise last

    def _failed(self, model: str) -> None:
        """One more consecutive failure; at ``failover.cooldownFailures`` the model sits out ``cooldownMs``."""
        n = self._failures.get(model, 0) + 1
        self._failures[model] = n
        fo = self.cfg.router.failover
        if n < fo.cooldown_failures:
            return
        self._failures[model] = 0
        scheduler = self.app.scheduler
        scheduler.set_cooldown(model, scheduler.clock() + fo.cooldown_ms / 1000)
        self.app.metrics.cooldowns.inc(model)
        self.app.log.warning("model_cooldown", model=model, cooldownMs=fo.cooldown_ms)
        old = self._cooldown_timers.pop(model, None)
        if old is not None:
            old.cancel()
        self._cooldown_timers[model] = asyncio.get_running_loop().call_later(
            fo.cooldown_ms / 1000, self._cooled_down, model)

    def _cooled_down(self, model: str) -> None:
        del self._cooldown_timers[model]
        self.app.scheduler.set_cooldown(model, None)
        self.app.log.info("model_cooldown_over", model=model)

    def _succeeded(self, model: str) -> None:
        self._failures.pop(model, None)

    def stop(self) -> None:
        for timer in self._cooldown_timers.values():
            timer.cancel()
        self._cooldown_timers.clear()

    async def read_raw(self, ex: Exchange) -> bytes:
        """Read a whole upstream reply as bytes; an upstream error status becomes the matching HttpError."""
        try:
            data = await ex.response.read()
        except UpstreamError as e:
            self.app.metrics.upstream_errors.inc(ex.model, e.kind)
            raise e.to_http(self.cfg.ollama.base_url) from None
        finally:
            ex.finish()
        if ex.response.status >= 400:
            err = upstream_http_error(ex.response.status, json_or_raw(data))
            if len(ex.attempts) > 1:
                err.extra = {**(err.extra or {}), "attempts": [a.to_json() for a in ex.attempts]}
            raise err
        return data

    async def read_result(self, ex: Exchange) -> Any:
        """Read and decode a whole upstream reply (a non-JSON one becomes ``{"raw": ...}``)."""
        return json_or_raw(await self.read_raw(ex))

    @staticmethod
    def with_router(raw: bytes, router: dict) -> bytes:
        """The upstream reply with the ``router`` object added at the top level (the original's shape:
        a non-object reply becomes ``{"result": ...}``). Spliced in when the reply is an object."""
        spliced = add_member(raw, "router", router)
        if spliced is not None:
            return spliced
        result = json_or_raw(raw)
        out = dict(result) if isinstance(result, dict) else {"result": result}
        out["router"] = router
        return dumps(out)

    def router_object(self, routed: Routed, ex: Exchange | None, mode: str = "sync") -> dict:
        d = routed.decision
        cls = routed.classification
        model = ex.model if ex is not None else d.model
        reason = d.reason
        if ex is not None and model != d.model:
            failed = ", ".join(f"{a.model} ({a.outcome})" for a in ex.attempts if a.model != model)
            reason = f"Failed over to {model} after {failed}; originally: {d.reason}"
        skipped = [f"{c.name} ({c.blocked})" for c in d.blocked]
        if skipped:
            reason += "; skipped: " + ", ".join(skipped)
        if cls.signals and not cls.explicit:
            reason += "; signals: " + ", ".join(cls.signals)
        obj: dict[str, Any] = {
            "mode": mode,
            "taskType": cls.task_type,
            "selectedModel": model,
            "fallbackModels": [c for c in d.candidates if c != model],
            "queueTimeMs": ex.queue_ms if ex else 0,
            "executionTimeMs": ex.execution_ms() if ex else 0,
            "decisionReason": reason,
            "complexity": cls.complexity,
            "confidence": round(cls.confidence, 3),
        }
        if routed.pinned is not None:
            obj["pinned"] = True
        if ex is not None and len(ex.attempts) > 1:
            obj["attempts"] = [a.to_json() for a in ex.attempts]
        if routed.meta.explain:
            obj["candidates"] = [{"name": c.name, "score": round(c.score, 3)} for c in d.ranked] + [
                {"name": c.name, "score": round(c.score, 3), "blocked": c.blocked} for c in d.blocked
            ]
        return obj

    def record(self, plane: str, routed: Routed | None, model: str | None, mode: str, status: int,
               seconds: float, stats: StreamStats | None = None, usage: dict | None = None) -> None:
        task = routed.classification.task_type if routed else None
        self.app.metrics.observe_request(
            plane, task, model, mode, status, seconds,
            first_byte=stats.first_byte_at if stats else None,
            usage=usage or (stats.usage if stats else None), chunks=stats.chunks if stats else 0,
        )
