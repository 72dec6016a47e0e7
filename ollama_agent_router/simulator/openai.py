"""Ollama's OpenAI-compatible layer: ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``
(wire-formats §2): request checks, replies, and SSE chunks in the ``current`` or ``legacy`` flavour."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

from ..http.messages import Request, Response, StreamResponse
from ..jsonutil import dumps
from .core import SimCore
from .plan import Conversation, Reply, message_text, tools_text
from .wire import OPENAI_JSON, SimError, base64_floats

URL_IMAGES = "image URLs are not currently supported, please use base64 encoded data instead"
_REASONING = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
              "max": "max", "xhigh": "max", "ultra": "max"}


# ---- request checks ------------------------------------------------------------------------------

def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def reasoning_think(body: dict[str, Any]) -> Any:
    """The native ``think`` value for an OpenAI request's reasoning_effort (or reasoning.effort)."""
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None or effort == "":
        return None
    if effort not in _REASONING:
        raise SimError(400, f'invalid reasoning value: "{effort}" (must be "high", "medium", "low", or "none")')
    return _REASONING[effort]


def check_v1_messages(messages: list[Any]) -> bool:
    """Validate OpenAI messages as Ollama's conversion does; True when any carries an image."""
    images = False
    for msg in messages:
        if not isinstance(msg, dict):
            raise SimError(400, "invalid message format")
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image_url":
                    ref = part.get("image_url")
                    url = ref.get("url") if isinstance(ref, dict) else ref
                    if not isinstance(url, str) or re.match(r"https?://", url):
                        raise SimError(400, URL_IMAGES)
                    images = True
                elif kind not in ("text", "input_audio"):
                    raise SimError(400, "invalid message format")
        elif content is not None and not isinstance(content, str):
            raise SimError(400, "invalid message format")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            args = fn.get("arguments") if isinstance(fn, dict) else None
            try:
                json.loads(args if isinstance(args, str) else "")
            except json.JSONDecodeError:
                raise SimError(400, "invalid tool call arguments") from None
    return images


# ---- rendering ---------------------------------------------------------------------------------------

def openai_error(status: int, message: str) -> dict[str, Any]:
    """§2.4: type only from the status; param and code are always null, as Ollama sends them."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native tool calls re-serialised the way the OpenAI layer sends them: arguments as a JSON string."""
    return [
        {
            "id": c["id"],
            "index": c["function"]["index"],
            "type": "function",
            "function": {
                "name": c["function"]["name"],
                "arguments": json.dumps(c["function"]["arguments"], separators=(",", ":"), sort_keys=True),
            },
        }
        for c in calls
    ]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _closing_events(final: dict[str, Any], include_usage: bool, prompt_tokens: int,
                    completion_tokens: int) -> list[bytes]:
    events = [sse(final)]
    if include_usage:
        # The usage chunk is the final chunk again with no choices, as Ollama builds it.
        events.append(sse(dict(final, choices=[], usage=usage(prompt_tokens, completion_tokens))))
    events.append(SSE_DONE)
    return events


def _openai_object(id_: str, kind: str, created: int, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope every OpenAI-compatible reply and chunk of Ollama's shares, in its field order."""
    return {"id": id_, "object": kind, "created": created, "model": model, "system_fingerprint": "fp_ollama",
            "choices": choices}


class ChatSseWriter:
    """Turns native generation events into /v1/chat/completions chunks in the chosen flavour.

    ``current`` (Ollama >= v0.32.6) mirrors api.openai.com: role only first, one ``created``, the finish
    reason on its own empty-delta chunk. ``legacy`` repeats role and content on every delta, stamps each
    chunk with its own time, and carries the finish reason on the native done chunk.
    """

    def __init__(self, model: str, flavour: str, include_usage: bool, rng: random.Random,
                 clock: Any = time.time) -> None:
        self.model = model
        self.legacy = flavour == "legacy"
        self.include_usage = include_usage
        self.clock = clock
        self.id = f"chatcmpl-{rng.randint(0, 998)}"
        self.created = int(clock())
        self.first = True
        self.sent_tools = False

    def _chunk(self, delta: dict[str, Any], finish: str | None, choices: bool = True) -> dict[str, Any]:
        return _openai_object(self.id, "chat.completion.chunk", int(self.clock()) if self.legacy else self.created,
                              self.model, [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [])

    def _delta(self, **fields: Any) -> dict[str, Any]:
        if self.legacy:
            delta = {"role": "assistant", "content": ""}
        else:
            delta = {"role": "assistant"} if self.first else {}
        self.first = False
        delta.update(fields)
        return delta

    def event(self, kind: str, value: Any) -> bytes:
        if kind == "content":
            return sse(self._chunk(self._delta(content=value), None))
        if kind == "thinking":
            return sse(self._chunk(self._delta(reasoning=value), None))
        self.sent_tools = True
        return sse(self._chunk(self._delta(content="", tool_calls=openai_tool_calls(value)), None))

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        """The finish chunk, the usage chunk when asked for, and [DONE]: one event each."""
        done_reason = reply.done_reason
        if self.legacy:
            reason = "tool_calls" if self.sent_tools else done_reason
            final = self._chunk(self._delta(), reason)
        else:
            reason = "tool_calls" if self.sent_tools and done_reason == "stop" else done_reason
            final = self._chunk({}, reason)
        return _closing_events(final, self.include_usage, reply.prompt_tokens, metrics.get("eval_count", 0))

    def broken(self, message: str | None) -> bytes:
        """§2.4: the native error line decodes as one empty chunk; then the body ends without [DONE]."""
        delta = self._delta() if self.legacy else self._delta(content="")
        return sse(self._chunk(delta, None))


def chat_completion(model: str, reply_text: str, reasoning: str, tool_calls: list[dict[str, Any]],
                    done_reason: str, prompt_tokens: int, completion_tokens: int, rng: random.Random) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply_text}
    if reasoning:
        message["reasoning"] = reasoning
    if tool_calls:
        message["tool_calls"] = openai_tool_calls(tool_calls)
        if done_reason == "stop":
            done_reason = "tool_calls"
    out = _openai_object(f"chatcmpl-{rng.randint(0, 998)}", "chat.completion", int(time.time()), model,
                         [{"index": 0, "message": message, "finish_reason": done_reason}])
    out["usage"] = usage(prompt_tokens, completion_tokens)
    return out


class CompletionSseWriter:
    """/v1/completions chunks; with include_usage every earlier chunk carries zero usage (an Ollama quirk)."""

    def __init__(self, model: str, include_usage: bool, rng: random.Random) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"cmpl-{rng.randint(0, 998)}"
        self.created = int(time.time())

    def _chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        out = _openai_object(self.id, "text_completion", self.created, self.model,
                             [{"text": text, "index": 0, "finish_reason": finish}])
        if self.include_usage:
            out["usage"] = usage(0, 0)
        return out

    def event(self, kind: str, value: Any) -> bytes:
        return sse(self._chunk(value if kind == "content" else "", None))

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        return _closing_events(self._chunk("", reply.done_reason), self.include_usage, reply.prompt_tokens,
                               metrics.get("eval_count", 0))

    def broken(self, message: str | None) -> bytes:
        return sse(self._chunk("", None))


def text_completion(model: str, text: str, done_reason: str, prompt_tokens: int, completion_tokens: int,
                    rng: random.Random) -> dict[str, Any]:
    out = _openai_object(f"cmpl-{rng.randint(0, 998)}", "text_completion", int(time.time()), model,
                         [{"text": text, "index": 0, "finish_reason": done_reason}])
    out["usage"] = usage(prompt_tokens, completion_tokens)
    return out


# ---- handlers ---------------------------------------------------------------------------------------

def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_tokens")
    return value if isinstance(value, int) else None


async def chat(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "[] is too short - 'messages'")
    has_images = check_v1_messages(messages)
    think = reasoning_think(body)
    job = await core.job(req, body, core.default_keep_alive_s)
    texts = [message_text(m.get("content")) for m in messages]
    last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    conv = Conversation("".join(texts) + tools_text(body.get("tools")), last_user, body.get("tools"),
                        after_tool=messages[-1].get("role") == "tool", images=has_images)
    core.plan(job, conv, think=think, num_predict=_max_tokens(body))
    if body.get("stream") is True:
        writer = ChatSseWriter(job.sent, core.stream_flavour, include_usage(body), core.rng)
        return await core.stream(job, writer, "text/event-stream")
    content, thinking, calls, metrics = await core.run.collect(job)
    reply = job.reply
    assert reply is not None
    obj = chat_completion(job.sent, content, thinking, calls, reply.done_reason, reply.prompt_tokens,
                          metrics.get("eval_count", 0), core.rng)
    return core.respond(job, Response(200, dumps(obj) + b"\n", content_type=OPENAI_JSON))


async def completions(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise SimError(400, "prompt must be a string")
    job = await core.job(req, body, core.default_keep_alive_s)
    core.plan(job, Conversation(prompt, prompt), think=False, num_predict=_max_tokens(body), api="generate")
    if body.get("stream") is True:
        return await core.stream(job, CompletionSseWriter(job.sent, include_usage(body), core.rng), "text/event-stream")
    content, _, _, metrics = await core.run.collect(job)
    reply = job.reply
    assert reply is not None
    obj = text_completion(job.sent, content, reply.done_reason, reply.prompt_tokens, metrics.get("eval_count", 0),
                          core.rng)
    return core.respond(job, Response(200, dumps(obj) + b"\n", content_type=OPENAI_JSON))


async def embeddings(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SimError(400, "invalid input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise SimError(400, f"invalid encoding format: {encoding}")
    job = await core.job(req, body, core.default_keep_alive_s)
    vectors, metrics = await core.embed(job, texts, body.get("dimensions"), normalise=True)
    data = [{"object": "embedding", "embedding": base64_floats(v) if encoding == "base64" else v, "index": i}
            for i, v in enumerate(vectors)]
    tokens = metrics["prompt_eval_count"]
    out = {"object": "list", "data": data, "model": job.sent,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return core.respond(job, Response(200, dumps(out) + b"\n", content_type=OPENAI_JSON))
