"""What the simulated model says: one deterministic reply planned before generation starts.

Every API turns its request into a ``Conversation`` and asks ``plan_reply`` what to answer, so the
native, OpenAI, Anthropic and Responses doors all say the same thing to the same question.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from typing import Any


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
    """The first named function of a native (or OpenAI chat) tools list."""
    if not isinstance(tools, list):
        return None
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            return fn
    return None


def call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))


def tools_text(tools: Any) -> str:
    """Tool definitions count towards the prompt, as the chat template renders them in."""
    return json.dumps(tools) if tools else ""


@dataclass
class Conversation:
    """What a chat request asks of the model, whichever API it came through."""

    prompt_text: str  # everything the template renders: it counts as prompt tokens
    last_user: str  # the latest user text: ``ECHO:`` in it is answered with what follows
    tools: Any = None  # native function tools: [{"type": "function", "function": {...}}]
    after_tool: bool = False  # a tool result came back since the user last spoke
    images: bool = False


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


def plan_reply(conv: Conversation, *, model: str, think: bool, num_predict: int | None, reply_tokens: int,
               rng: random.Random) -> Reply:
    """The deterministic reply: a tool call when tools are offered (unless a tool result just came back),
    else the text after ``ECHO:`` (one following space dropped) or a fixed sentence, cut to ``num_predict`` tokens."""
    prompt_tokens = token_count(conv.prompt_text)
    tool = None if conv.after_tool else first_tool(conv.tools)
    if tool is not None:
        args = sample_arguments(tool.get("parameters"))
        call = {"id": call_id(rng), "function": {"index": 0, "name": tool["name"], "arguments": args}}
        return Reply([], tool_calls=[call], prompt_tokens=prompt_tokens)
    marker = conv.last_user.find("ECHO:")
    text = conv.last_user[marker + 5:].removeprefix(" ") if marker >= 0 else f"Simulated reply from {model}."
    thinking = split_tokens("Thinking it over.", 3) if think else []
    content = split_tokens(text, reply_tokens)
    reason = "stop"
    if num_predict is not None and 0 <= num_predict < len(thinking) + len(content):
        reason = "length"
        thinking = thinking[:num_predict]
        content = content[:num_predict - len(thinking)]
    return Reply(content, thinking, [], reason, prompt_tokens)
