"""Pure pieces of the Ollama simulator: names, durations, timestamps, reply planning and wire rendering.

Nothing here does I/O or waits, so every shape can be checked with plain data. The formats follow
shared/spec/wire-formats.md (§1 native, §2 OpenAI).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import string
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from ..jsonutil import dumps

FOREVER_S = 292 * 365.25 * 86400  # Go's maximum time.Duration, roughly: how Ollama renders "keep forever"
NDJSON = "application/x-ndjson"
OPENAI_JSON = "application/json"  # the OpenAI layer writes no charset
EMBEDDING_DIMS = 384
BUSY = "server busy, please try again.  maximum pending requests exceeded"  # two spaces, as Ollama writes it
MIDSTREAM_ERROR = "an error was encountered while running the model"

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d*\.?\d*)([^\d.]*)")


class SimError(Exception):
    """An error Ollama would answer with before any response byte; rendered natively or OpenAI-style."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- names ------------------------------------------------------------------------------------

def canonical_name(name: str) -> str:
    """Ollama's short name: library prefixes hidden, ``:latest`` added when no tag is given."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def full_name(canonical: str) -> str:
    """The fully qualified name Ollama puts in capability errors."""
    parts = canonical.split("/")
    if len(parts) == 1:
        return "registry.ollama.ai/library/" + canonical
    if len(parts) == 2:
        return "registry.ollama.ai/" + canonical
    return canonical


def owner(canonical: str) -> str:
    parts = canonical.split("/")
    return "library" if len(parts) == 1 else parts[-2]


def digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parameter_count(parameter_size: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMBT]?)\s*", parameter_size.upper())
    if not m:
        return 0
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


# ---- keep_alive --------------------------------------------------------------------------------

def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration in seconds; raises SimError(400) with Go's message on bad input."""
    s = text
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise SimError(400, f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise SimError(400, f'time: invalid duration "{text}"')
        if not unit:
            raise SimError(400, f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise SimError(400, f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep a model after it goes idle; None means forever (any negative value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SimError(400, "json: cannot unmarshal keep_alive: expected a number or a duration string")
    seconds = float(value) if not isinstance(value, str) else parse_go_duration(value)
    return None if seconds < 0 else seconds


# ---- timestamps ---------------------------------------------------------------------------------

def rfc3339(ns: int, local: bool) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed; UTC ``Z`` or the local offset (``Z`` at offset 0, as Go)."""
    secs, frac_ns = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, tz=timezone.utc)
    if local:
        dt = dt.astimezone()
    frac = f"{frac_ns:09d}".rstrip("0")
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + ("." + frac if frac else "")
    offset = dt.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def now_utc() -> str:
    return rfc3339(time.time_ns(), local=False)


def monotonic_to_local(expires_mono: float, now_mono: float, now_wall: float) -> str:
    remaining = FOREVER_S if math.isinf(expires_mono) else expires_mono - now_mono
    return rfc3339(int((now_wall + remaining) * 1e9), local=True)


# ---- reply planning -------------------------------------------------------------------------------

def token_count(text: str) -> int:
    return (len(text) + 3) // 4


def split_tokens(text: str, n: int) -> list[str]:
    """``text`` cut into at most ``n`` non-empty pieces that concatenate back to it."""
    n = min(n, len(text))
    return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the ``text`` parts of an OpenAI parts array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def sample_value(schema: Any, depth: int = 0) -> Any:
    """A plausible value for a JSON schema: first enum value, else a fixed value per type."""
    if not isinstance(schema, dict) or depth > 8:
        return "sim"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample_value(schema["items"], depth + 1)] if isinstance(schema.get("items"), dict) else []
    if kind == "object":
        return sample_arguments(schema, depth + 1)
    if kind == "null":
        return None
    return "sim"


def sample_arguments(schema: Any, depth: int = 0) -> dict[str, Any]:
    """Arguments holding exactly the schema's required properties."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    return {k: sample_value(props.get(k), depth) for k in required if isinstance(k, str)}


def first_tool(tools: Any) -> dict[str, Any] | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            return fn
    return None


def call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))


@dataclass
class Reply:
    """What the simulated model will say, decided before generation starts."""

    content: list[str]
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # native form: arguments is an object
    done_reason: str = "stop"
    prompt_tokens: int = 0

    @property
    def eval_count(self) -> int:
        calls = sum(token_count(json.dumps(c["function"]["arguments"])) for c in self.tool_calls)
        return len(self.content) + len(self.thinking) + calls


def plan_reply(
    *, model: str, prompt_text: str, echo_source: str, tools: Any, after_tool: bool, think: bool,
    num_predict: int | None, reply_tokens: int, rng: random.Random,
) -> Reply:
    """The deterministic reply: a tool call when tools are offered (unless a tool result just came back),
    else the text after ``ECHO:`` (one following space dropped) or a fixed sentence, cut to ``num_predict`` tokens."""
    prompt_tokens = token_count(prompt_text)
    tool = None if after_tool else first_tool(tools)
    if tool is not None:
        args = sample_arguments(tool.get("parameters"))
        call = {"id": call_id(rng), "function": {"index": 0, "name": tool["name"], "arguments": args}}
        return Reply([], tool_calls=[call], prompt_tokens=prompt_tokens)
    marker = echo_source.find("ECHO:")
    text = echo_source[marker + 5:].removeprefix(" ") if marker >= 0 else f"Simulated reply from {model}."
    thinking = split_tokens("Thinking it over.", 3) if think else []
    content = split_tokens(text, reply_tokens)
    reason = "stop"
    if num_predict is not None and 0 <= num_predict < len(thinking) + len(content):
        reason = "length"
        thinking = thinking[:num_predict]
        content = content[:num_predict - len(thinking)]
    return Reply(content, thinking, [], reason, prompt_tokens)


# ---- embeddings -----------------------------------------------------------------------------------

def embedding(model: str, text: str, dims: int, normalise: bool = True) -> list[float]:
    """A stable pseudo-random vector per (model, text): equal texts embed equally."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vec = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    return unit(vec) if normalise else vec


def unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def base64_floats(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")


# ---- request checks ------------------------------------------------------------------------------

_URL_IMAGES = "image URLs are not currently supported, please use base64 encoded data instead"
_REASONING = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
              "max": "max", "xhigh": "max", "ultra": "max"}


def status_message(status: int, sent: str | None) -> str:
    """Ollama's own text for an injected status."""
    if status == 503:
        return BUSY
    if status == 404 and sent:
        return f"model '{sent}' not found"
    if status == 500:
        return "llama runner process has terminated: exit status 2"
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def tools_text(body: dict[str, Any]) -> str:
    """Tool definitions count towards the prompt, as the chat template renders them in."""
    return json.dumps(body["tools"]) if body.get("tools") else ""


def native_num_predict(body: dict[str, Any]) -> int | None:
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    value = options.get("num_predict")
    return value if isinstance(value, int) and value >= 0 else None


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def reasoning_think(body: dict[str, Any]) -> Any:
    """The native ``think`` value for an OpenAI request's reasoning_effort (or reasoning.effort)."""
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None:
        return None
    if effort not in _REASONING:
        raise SimError(400, f"invalid reasoning value: '{effort}' (must be \"high\", \"medium\", \"low\", or \"none\")")
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
                        raise SimError(400, _URL_IMAGES)
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


# ---- native rendering ---------------------------------------------------------------------------

METRIC_KEYS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
               "eval_count", "eval_duration")


def native_chunk(api: str, model: str, created_at: str, kind: str, value: Any) -> dict[str, Any]:
    """One streamed ``done:false`` object for /api/chat (``api="chat"``) or /api/generate."""
    if api == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": value if kind == "content" else ""}
        if kind == "thinking":
            message["thinking"] = value
        if kind == "tool_calls":
            message["tool_calls"] = value
        return {"model": model, "created_at": created_at, "message": message, "done": False}
    out: dict[str, Any] = {"model": model, "created_at": created_at, "response": value if kind == "content" else ""}
    if kind == "thinking":
        out["thinking"] = value
    out["done"] = False
    return out


def native_final(
    api: str, model: str, created_at: str, done_reason: str, metrics: dict[str, int], *,
    content: str = "", thinking: str = "", tool_calls: list[dict[str, Any]] | None = None,
    context: list[int] | None = None,
) -> dict[str, Any]:
    """The ``done:true`` object; for non-streamed replies it carries the whole text. Zero metrics are omitted."""
    out: dict[str, Any] = {"model": model, "created_at": created_at}
    if api == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        out["message"] = message
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = done_reason
    if context:
        out["context"] = context
    out.update((k, metrics[k]) for k in METRIC_KEYS if metrics.get(k))
    return out


def ndjson(obj: Any) -> bytes:
    return dumps(obj) + b"\n"


# ---- OpenAI rendering -------------------------------------------------------------------------------

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

    def finish(self, done_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        """The finish chunk, the usage chunk when asked for, and [DONE]: one event each."""
        if self.legacy:
            reason = "tool_calls" if self.sent_tools else done_reason
            final = self._chunk(self._delta(), reason)
        else:
            reason = "tool_calls" if self.sent_tools and done_reason == "stop" else done_reason
            final = self._chunk({}, reason)
        return _closing_events(final, self.include_usage, prompt_tokens, completion_tokens)

    def broken(self) -> bytes:
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

    def finish(self, done_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        return _closing_events(self._chunk("", done_reason), self.include_usage, prompt_tokens, completion_tokens)

    def broken(self) -> bytes:
        return sse(self._chunk("", None))


def text_completion(model: str, text: str, done_reason: str, prompt_tokens: int, completion_tokens: int,
                    rng: random.Random) -> dict[str, Any]:
    out = _openai_object(f"cmpl-{rng.randint(0, 998)}", "text_completion", int(time.time()), model,
                         [{"text": text, "index": 0, "finish_reason": done_reason}])
    out["usage"] = usage(prompt_tokens, completion_tokens)
    return out
