"""Anthropic Messages as Ollama serves it: ``POST /v1/messages`` (wire-formats §7).

Ollama converts the request into a native chat, runs it, and converts the reply back; so does this module,
through the same scheduler, faults and reply plan as every other door. Looking like Ollama, not like
Anthropic: ids are ``msg_<24 hex>`` and ``call_<8>``, ``stop_sequence`` is never sent, ``message_start``
carries a len/4 estimate of the input, no ``ping`` and no ``error`` events are ever written, and a failure
after the first event just ends the body. Not simulated: server-side web search (§7.8; ``web_search*``
tools are left out of what the model is offered) and zstd request bodies.
"""

from __future__ import annotations

import base64
import binascii
import random
from typing import Any

from ..http.messages import Request, Response, StreamResponse
from ..jsonutil import dumps
from .core import SimCore
from .plan import Conversation, Reply, tools_text
from .wire import SimError, json_kind, named_event

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
_FIELD_TYPES = {"model": (str, "string"), "max_tokens": (int, "int"), "messages": (list, "[]anthropic.MessageParam"),
                "stream": (bool, "bool"), "system": ((str, list), "anthropic.SystemPrompt")}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "max", "xhigh": "high"}


def hex_id(rng: random.Random, nbytes: int = 12) -> str:
    return f"{rng.getrandbits(8 * nbytes):0{2 * nbytes}x}"


def anthropic_error(status: int, message: str, request_id: str) -> dict[str, Any]:
    """§7.7: the error type follows from the status alone; ``request_id`` is a body field."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": request_id}


# ---- the request ------------------------------------------------------------------------------------

def check_request(body: dict[str, Any]) -> None:
    """§7.4's validation, first failure wins: field types, then model, max_tokens, messages."""
    for name, (kind, go_type) in _FIELD_TYPES.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            raise SimError(400, f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                                f"MessagesRequest.{name} of type {go_type}")
    if not body.get("model"):
        raise SimError(400, "model is required")
    if not body.get("max_tokens") or body["max_tokens"] <= 0:
        raise SimError(400, "max_tokens is required and must be positive")
    if not body.get("messages"):
        raise SimError(400, "messages is required")
    for msg in body["messages"]:
        if not isinstance(msg, dict):
            raise SimError(400, f"json: cannot unmarshal {json_kind(msg)} into Go struct field "
                                "MessagesRequest.messages of type anthropic.MessageParam")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(block: dict[str, Any], key: str = "text") -> str:
    value = block.get(key)
    return value if isinstance(value, str) else ""


def _check_image(block: dict[str, Any]) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise SimError(400, "invalid image source")
    if source.get("type") != "base64":
        raise SimError(400, f"invalid image source type: {source.get('type')}. Only base64 images are supported.")
    try:
        base64.b64decode(_text(source, "data"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise SimError(400, f"invalid base64 image data: {e}") from None


def _tool_result_text(block: dict[str, Any]) -> tuple[str, bool]:
    """A tool result's text, and whether it carries images."""
    content = block.get("content")
    if isinstance(content, str):
        return content, False
    parts = _blocks(content)
    for part in parts:
        if part.get("type") == "image":
            _check_image(part)
    return "".join(_text(p) for p in parts if p.get("type") == "text"), any(p.get("type") == "image" for p in parts)


def _message(msg: dict[str, Any]) -> tuple[str, bool, bool]:
    """One message's rendered text, whether it holds images, and whether it returns tool results."""
    texts: list[str] = []
    images = results = False
    for block in _blocks(msg.get("content")):
        kind = block.get("type")
        if kind == "text":
            texts.append(_text(block))
        elif kind == "thinking":
            texts.append(_text(block, "thinking"))
        elif kind == "image":
            _check_image(block)
            images = True
        elif kind == "tool_use":
            for key in ("id", "name"):
                if not _text(block, key):
                    raise SimError(400, f"tool_use block missing required '{key}' field")
            texts.append(dumps(block.get("input") or {}).decode())
        elif kind == "tool_result":
            text, with_images = _tool_result_text(block)
            texts.append(text)
            images, results = images or with_images, True
        # Anything else (documents, redacted thinking, search results…) is dropped silently, as Ollama does.
    return "".join(texts), images, results


def native_tools(tools: Any) -> list[dict[str, Any]]:
    """Anthropic tools as Ollama function tools; web search tools are left out (not simulated)."""
    out = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or str(tool.get("type", "")).startswith("web_search"):
            continue
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise SimError(400, f'invalid input_schema for tool "{tool.get("name")}": json: cannot unmarshal '
                                f"{json_kind(schema)} into Go value of type api.ToolFunctionParameters")
        out.append({"type": "function", "function": {"name": _text(tool, "name"), "parameters": schema or {},
                                                     "description": _text(tool, "description")}})
    return out


def system_text(system: Any) -> str:
    """A string, or the text blocks of a list concatenated with no separator."""
    return system if isinstance(system, str) else "".join(_text(b) for b in _blocks(system) if b.get("type") == "text")


def conversation(body: dict[str, Any]) -> Conversation:
    texts = [system_text(body.get("system"))]
    last_user = ""
    after_tool = images = False
    for msg in body["messages"]:
        text, with_images, results = _message(msg)
        texts.append(text)
        images = images or with_images
        if msg.get("role") == "user":
            # Claude Code sends reminders as text beside its tool results: a result still means "answer now".
            after_tool = results
            last_user = text if text and not results else last_user
    tools = native_tools(body.get("tools"))
    return Conversation("".join(texts) + tools_text(body.get("tools")), last_user, tools, after_tool, images)


def think_value(body: dict[str, Any]) -> Any:
    """``thinking.type`` decides; else ``output_config.effort``; else the model's default (None)."""
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind in ("enabled", "disabled"):
        return kind == "enabled"
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    return _EFFORTS.get(effort) if isinstance(effort, str) else None


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Ollama's len/4 estimate for ``message_start`` (§7.6.3); images do not count."""
    total = len(system_text(body.get("system")).encode())
    for msg in body["messages"]:
        total += len(str(msg.get("role", "")))
        for block in _blocks(msg.get("content")):
            kind = block.get("type")
            if kind in ("text", "thinking"):
                total += len(_text(block, kind).encode())
            elif kind in ("tool_use", "tool_result"):
                total += len(dumps(block))
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            total += len(_text(tool, "name")) + len(_text(tool, "description")) + len(dumps(tool.get("input_schema")))
    return max(1, total // 4)


# ---- the reply --------------------------------------------------------------------------------------

def stop_reason(done_reason: str, tools: bool) -> str | None:
    """``tool_use`` beside any tool call; ``stop`` and ``length`` mapped; other reasons are ``stop_sequence``."""
    if tools:
        return "tool_use"
    return _STOP_REASONS.get(done_reason, "stop_sequence") if done_reason else None


def tool_use(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
            "input": call["function"]["arguments"]}


def message(msg_id: str, model: str, content: str, thinking: str, calls: list[dict[str, Any]], done_reason: str,
            input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The non-streamed reply (§7.5): thinking, text, then one tool_use block per call; ``content`` null if empty."""
    blocks: list[dict[str, Any]] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking})
    if content:
        blocks.append({"type": "text", "text": content})
    blocks += [tool_use(c) for c in calls]
    out: dict[str, Any] = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                           "content": blocks or None}
    reason = stop_reason(done_reason, bool(calls))
    if reason:
        out["stop_reason"] = reason
    out["usage"] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    return out


def event(obj: dict[str, Any]) -> bytes:
    return named_event(obj["type"], dumps(obj))


class MessagesSseWriter:
    """The named events of §7.6.2 from native events: at most one thinking block, text blocks, and one
    start / one whole ``input_json_delta`` / stop triple per tool call; indices from 0 without gaps."""

    def __init__(self, msg_id: str, model: str, input_estimate: int) -> None:
        self.start: dict[str, Any] | None = {
            "type": "message_start",
            "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                        "usage": {"input_tokens": input_estimate, "output_tokens": 0}},
        }
        self.index = 0  # of the open block, or of the next one
        self.open: str | None = None  # the type of the open block
        self.thought = False  # the thinking block was closed: later thinking is dropped
        self.tool_ids: set[str] = set()

    def _begin(self) -> list[bytes]:
        start, self.start = self.start, None
        return [event(start)] if start else []

    def _open(self, block: dict[str, Any]) -> bytes:
        self.open = block["type"]
        return event({"type": "content_block_start", "index": self.index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event({"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.thought = self.thought or self.open == "thinking"
        out = event({"type": "content_block_stop", "index": self.index})
        self.open = None
        self.index += 1
        return [out]

    def event(self, kind: str, value: Any) -> bytes:
        out = self._begin()
        if kind == "thinking" and not self.thought:
            if self.open != "thinking":
                out += self._close() + [self._open({"type": "thinking", "thinking": ""})]
            out.append(self._delta({"type": "thinking_delta", "thinking": value}))
        elif kind == "content":
            if self.open != "text":
                out += self._close() + [self._open({"type": "text", "text": ""})]
            out.append(self._delta({"type": "text_delta", "text": value}))
        elif kind == "tool_calls":
            out += self._close()
            for call in value:
                if call["id"] in self.tool_ids:
                    continue
                self.tool_ids.add(call["id"])
                out.append(self._open(dict(tool_use(call), input={})))
                out.append(self._delta({"type": "input_json_delta",
                                        "partial_json": dumps(call["function"]["arguments"]).decode()}))
                out += self._close()
        return b"".join(out)

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        reason = stop_reason(reply.done_reason, bool(self.tool_ids))
        usage = {"input_tokens": reply.prompt_tokens, "output_tokens": metrics.get("eval_count", 0)}
        return self._begin() + self._close() + [
            event({"type": "message_delta", "delta": {"stop_reason": reason} if reason else {}, "usage": usage}),
            event({"type": "message_stop"}),
        ]

    def broken(self, message: str | None) -> bytes:
        return b""  # §7.6.4: no error event; the body just ends without message_delta and message_stop


# ---- the handler ------------------------------------------------------------------------------------

async def messages(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    check_request(body)
    conv = conversation(body)
    job = await core.job(req, body, core.default_keep_alive_s)
    core.plan(job, conv, think=think_value(body), num_predict=body["max_tokens"], relax_thinking=True)
    msg_id = "msg_" + hex_id(core.rng)
    if body.get("stream") is True:
        return await core.stream(job, MessagesSseWriter(msg_id, job.sent, estimate_input_tokens(body)),
                                 "text/event-stream")
    content, thinking, calls, metrics = await core.run.collect(job)
    reply = job.reply
    assert reply is not None
    obj = message(msg_id, job.sent, content, thinking, calls, reply.done_reason, reply.prompt_tokens,
                  metrics.get("eval_count", 0))
    return core.respond(job, Response(200, dumps(obj) + b"\n", content_type="application/json"))
