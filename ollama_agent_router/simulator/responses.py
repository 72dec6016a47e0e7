"""OpenAI Responses as Ollama serves it: stateless ``POST /v1/responses`` (wire-formats §8).

Every request carries the whole conversation. As in Ollama, ``previous_response_id``, ``conversation``,
``store`` and ``tool_choice`` are ignored without a word: the reply says ``previous_response_id: null``
and ``store: false``. ``status`` is always ``completed``; stream payloads have their keys in alphabetical
order (Ollama builds them from Go maps); a failure after the first event just ends the body. Not
simulated: the server-side ``web_search`` tool (left out of what the model is offered) and zstd bodies.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..http.messages import Request, Response, StreamResponse
from ..jsonutil import dumps
from .core import SimCore
from .openai import URL_IMAGES, reasoning_think
from .plan import Conversation, Reply, tools_text
from .wire import OPENAI_JSON, SimError, json_kind, named_event

_DATA_IMAGE = re.compile(r"data:(image/(jpeg|jpg|png|webp))?;base64,")


# ---- the request ------------------------------------------------------------------------------------

def _image(part: dict[str, Any]) -> bool:
    """Whether an ``input_image`` part carries an image (a bare ``file_id`` is skipped, as Ollama does)."""
    url = part.get("image_url")
    if url is None and part.get("file_id"):
        return False
    if isinstance(url, str) and re.match(r"https?://", url):
        raise SimError(400, URL_IMAGES)
    if not isinstance(url, str) or not _DATA_IMAGE.match(url):
        raise SimError(400, "invalid image input")
    return True


def _parts(i: int, content: Any) -> tuple[str, bool]:
    """The text of a message's content (a string or parts), and whether it holds images."""
    if not isinstance(content, list):
        return (content if isinstance(content, str) else ""), False
    texts: list[str] = []
    images = False
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "input_image":
            images = _image(part) or images
        elif kind == "input_file":
            raise SimError(400, "file inputs are not currently supported")
        else:
            raise SimError(400, f"input[{i}]: content[{j}]: unknown content type: {kind}")
    return "".join(texts), images


def _arguments(text: Any) -> str:
    try:
        args = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as e:
        raise SimError(400, f"failed to parse function call arguments: {e.msg}") from None
    if not isinstance(args, dict):
        raise SimError(400, f"failed to parse function call arguments: json: cannot unmarshal {json_kind(args)} "
                            "into Go value of type map[string]interface {}")
    return text


def _items(body: dict[str, Any]) -> list[Any]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}] if items else []
    if items is None or isinstance(items, list):
        return items or []
    raise SimError(400, f"input must be a string or array: got {json_kind(items)}")


def conversation(body: dict[str, Any]) -> Conversation:
    """§8.3's conversion, with its 400s for item and content types Ollama does not know."""
    instructions = body.get("instructions")
    texts = [instructions if isinstance(instructions, str) else ""]
    last_user = ""
    after_tool = images = False
    for i, item in enumerate(_items(body)):
        item = item if isinstance(item, dict) else {}
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            text, with_images = _parts(i, item.get("content"))
            texts.append(text)
            images = images or with_images
            if item.get("role") == "user":
                last_user, after_tool = text, False
        elif kind == "function_call":
            texts.append(_arguments(item.get("arguments")))
        elif kind == "function_call_output":
            text, with_images = _parts(i, item.get("output"))
            texts.append(text)
            images, after_tool = images or with_images, True
        elif kind == "reasoning":  # its encrypted_content is the plain thinking Ollama handed out
            texts.append(str(item.get("encrypted_content") or ""))
        elif kind is None:
            raise SimError(400, "input item missing required 'type' field")
        elif kind != "web_search_call":
            raise SimError(400, f'input[{i}]: unknown input item type: "{kind}"')
    tools = native_tools(body.get("tools"))
    return Conversation("".join(texts) + tools_text(body.get("tools")), last_user, tools, after_tool, images)


def native_tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools as they are; namespace members as ``<ns>.<name>``; other kinds (custom, local_shell…) as
    a tool of that name without parameters; ``web_search`` left out (not simulated)."""
    out = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or tool.get("type") == "web_search":
            continue
        if tool.get("type") == "namespace":
            members = [m for m in tool.get("tools") or [] if isinstance(m, dict)]
            out += [_function(f"{tool.get('name')}.{m.get('name')}", m) for m in members]
        else:
            out.append(_function(tool.get("name"), tool if tool.get("type") == "function" else {}))
    return out


def _function(name: Any, tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name if isinstance(name, str) else "",
                                             "description": tool.get("description") or "",
                                             "parameters": tool.get("parameters")}}


def echo(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The request fields a reply echoes, defaults filled in (§8.4; the stream's shapes per §8.5.3)."""
    tools = [{"type": t.get("type"), "name": t.get("name"), "description": t.get("description"),
              "strict": t.get("strict"), "parameters": _sorted(t.get("parameters"))}
             for t in body.get("tools") or [] if isinstance(t, dict)]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    fmt = {k: fmt[k] for k in ("type", "name", "schema", "strict") if k in fmt} if isinstance(fmt, dict) else None
    given = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    keys = ("effort", "summary")
    reasoning = None
    if any(given.get(k) for k in keys):
        reasoning = {k: given.get(k) for k in keys if stream or given.get(k)}
    instructions = body.get("instructions")
    return {"instructions": instructions if isinstance(instructions, str) and instructions else None,
            "tools": tools, "truncation": body.get("truncation") or "disabled",
            "text": {"format": fmt or {"type": "text"}}, "top_p": _number(body.get("top_p")),
            "temperature": _number(body.get("temperature")), "reasoning": reasoning,
            "max_output_tokens": body.get("max_output_tokens"), "background": body.get("background") is True}


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 1


def _sorted(value: Any) -> Any:
    """A JSON value with its object keys sorted, as Go writes a map."""
    return json.loads(json.dumps(value, sort_keys=True))


# ---- the reply --------------------------------------------------------------------------------------

def response(resp_id: str, model: str, echoed: dict[str, Any], status: str, output: list[dict[str, Any]],
             usage: dict[str, Any] | None, completed_at: int | None) -> dict[str, Any]:
    """The response object, in Ollama's key order; ``created_at`` is stamped each time it is built."""
    e = echoed
    return {"id": resp_id, "object": "response", "created_at": int(time.time()), "completed_at": completed_at,
            "status": status, "incomplete_details": None, "model": model, "previous_response_id": None,
            "instructions": e["instructions"], "output": output, "error": None, "tools": e["tools"],
            "tool_choice": "auto", "truncation": e["truncation"], "parallel_tool_calls": True, "text": e["text"],
            "top_p": e["top_p"], "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
            "temperature": e["temperature"], "reasoning": e["reasoning"], "usage": usage,
            "max_output_tokens": e["max_output_tokens"], "max_tool_calls": None, "store": False,
            "background": e["background"], "service_tier": "default", "metadata": {}, "safety_identifier": None,
            "prompt_cache_key": None}


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}],
            "encrypted_content": thinking}


def function_call(item_id: str, call: dict[str, Any], status: str) -> dict[str, Any]:
    fn = call["function"]
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call["id"], "name": fn["name"],
            "arguments": json.dumps(fn["arguments"], separators=(",", ":"), sort_keys=True, ensure_ascii=False)}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output(resp_id: str, msg_id: str, content: str, thinking: str, calls: list[dict[str, Any]]) -> list[dict]:
    """Non-streamed output (§8.4): reasoning, then the function calls, or else one message (text beside tool
    calls is dropped); ids derive from the response id."""
    items = [reasoning_item(f"rs_{resp_id}", thinking)] if thinking else []
    if calls:
        return items + [function_call(f"fc_{resp_id}_{i}", c, "completed") for i, c in enumerate(calls)]
    return items + [message_item(msg_id, "completed", [text_part(content)])]


class ResponsesSseWriter:
    """§8.5.2's events from native events, numbered from 0, keys in alphabetical order."""

    def __init__(self, resp_id: str, msg_id: str, model: str, echoed: dict[str, Any], ids: tuple[int, int]) -> None:
        self.envelope = (resp_id, model, echoed)
        self.msg_id = msg_id
        self.rs_id, self.fc_prefix = f"rs_{ids[0]}", f"fc_{ids[1]}"
        self.seq = 0
        self.started = False
        self.open: dict[str, Any] | None = None  # the reasoning or message item being streamed
        self.text = ""  # what the open item has said so far
        self.output: list[dict[str, Any]] = []  # finished items; the next item's output_index is its length
        self.calls = 0

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = dict(fields, type=kind, sequence_number=self.seq)
        self.seq += 1
        return named_event(kind, json.dumps(payload, separators=(",", ":"), sort_keys=True,
                                            ensure_ascii=False).encode())

    def _response(self, kind: str, status: str, usage_: dict[str, Any] | None, done: int | None) -> bytes:
        resp_id, model, echoed = self.envelope
        output_ = self.output if status == "completed" else []
        return self._emit(kind, response=response(resp_id, model, echoed, status, output_, usage_, done))

    def _begin(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return (self._response("response.created", "in_progress", None, None)
                + self._response("response.in_progress", "in_progress", None, None))

    def _add(self, item: dict[str, Any]) -> bytes:
        return self._emit("response.output_item.added", item=item, output_index=len(self.output))

    def _done(self, item: dict[str, Any]) -> bytes:
        out = self._emit("response.output_item.done", item=item, output_index=len(self.output))
        self.output.append(item)
        return out

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        at = {"item_id": item["id"], "output_index": len(self.output)}
        if item["type"] == "reasoning":
            return (self._emit("response.reasoning_summary_text.done", summary_index=0, text=self.text, **at)
                    + self._done(reasoning_item(item["id"], self.text)))
        part = text_part(self.text)
        return (self._emit("response.output_text.done", content_index=0, logprobs=[], text=self.text, **at)
                + self._emit("response.content_part.done", content_index=0, part=part, **at)
                + self._done(message_item(item["id"], "completed", [part])))

    def _into(self, item: dict[str, Any]) -> bytes:
        """Open ``item`` unless it is the open one already; appends ``text`` to it either way."""
        if self.open is not None and self.open["id"] == item["id"]:
            return b""
        out = self._close() + self._add(item)
        self.open, self.text = item, ""
        if item["type"] == "message":
            out += self._emit("response.content_part.added", content_index=0, item_id=item["id"],
                              output_index=len(self.output), part=text_part(""))
        return out

    def _calls(self, calls: list[dict[str, Any]]) -> bytes:
        out = self._close()
        for call in calls:
            item = function_call(f"{self.fc_prefix}_{self.calls}", call, "completed")
            self.calls += 1
            at = {"item_id": item["id"], "output_index": len(self.output)}
            out += (self._add(dict(item, arguments="", status="in_progress"))
                    + self._emit("response.function_call_arguments.delta", delta=item["arguments"], **at)
                    + self._emit("response.function_call_arguments.done", arguments=item["arguments"], **at)
                    + self._done(item))
        return out

    def event(self, kind: str, value: Any) -> bytes:
        out = self._begin()
        if kind == "tool_calls":
            return out + self._calls(value)
        if kind == "thinking":
            out += self._into({"id": self.rs_id, "summary": [], "type": "reasoning"})
            fields = {"delta": value, "item_id": self.rs_id, "summary_index": 0}
            name = "response.reasoning_summary_text.delta"
        elif self.calls:
            return out  # text after a tool call is discarded
        else:
            out += self._into(message_item(self.msg_id, "in_progress", []))
            fields = {"content_index": 0, "delta": value, "item_id": self.msg_id, "logprobs": []}
            name = "response.output_text.delta"
        self.text += value
        return out + self._emit(name, output_index=len(self.output), **fields)

    def finish(self, reply: Reply, metrics: dict[str, int]) -> list[bytes]:
        out = self._begin() + self._close()
        used = usage(reply.prompt_tokens, metrics.get("eval_count", 0))
        return [out + self._response("response.completed", "completed", used, int(time.time()))]

    def broken(self, message: str | None) -> bytes:
        return b""  # §8.5.2: no response.failed, no error event; the body just ends


# ---- the handler ------------------------------------------------------------------------------------

async def responses(core: SimCore, req: Request, call: dict) -> Response | StreamResponse:
    body = await core.body(req, call)
    conv = conversation(body)
    think = reasoning_think(body)
    stream = body.get("stream") is True
    echoed = echo(body, stream)
    job = await core.job(req, body, core.default_keep_alive_s)
    limit = body.get("max_output_tokens")
    core.plan(job, conv, think=think, num_predict=limit if isinstance(limit, int) else None)
    resp_id, msg_id = f"resp_{core.rng.randint(0, 999998)}", f"msg_{core.rng.randint(0, 999998)}"
    if stream:
        ids = (core.rng.randint(0, 999998), core.rng.randint(0, 999998))
        return await core.stream(job, ResponsesSseWriter(resp_id, msg_id, job.sent, echoed, ids), "text/event-stream")
    content, thinking, calls, metrics = await core.run.collect(job)
    reply = job.reply
    assert reply is not None
    obj = response(resp_id, job.sent, echoed, "completed", output(resp_id, msg_id, content, thinking, calls),
                   usage(reply.prompt_tokens, metrics.get("eval_count", 0)), int(time.time()))
    return core.respond(job, Response(200, dumps(obj) + b"\n", content_type=OPENAI_JSON))
