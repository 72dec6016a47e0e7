"""Reading a conversation for the classifier: which text the user wrote, and what a coding agent's harness put
around it.

A coding agent (Claude Code, Codex CLI, Cline, opencode, ...) wraps every request in its own harness: a long
system prompt, a catalogue of tools, ``system`` or ``developer`` messages inside the conversation, and text
blocks it injects into user turns (``<system-reminder>``, ``<environment_context>``, ...). Only the user's
words differ between its requests, so only they may decide the task. ``read`` finds them:

- the **ask** is the newest user turn with text of its own once injected blocks are removed; a user turn that
  held only injections (a reminder beside a tool result) is not one;
- the **context** is up to ``CONTEXT_CHARS`` of the turns before the ask, newest first;
- **mid-loop** means the newest turn (past injection-only ones) is a tool result: the model is working;
- the request is **harness-shaped** when it offers many tools, has a long system prompt, carries injected
  blocks, or puts system messages inside the conversation. Any one is enough; none names a product.

The text is read from the newest turn backwards and the scan stops once the context is full, so the work
grows with the newest turns, not with the history. Sizes are one ``len`` per message.
"""

from __future__ import annotations

import re
from typing import NamedTuple

CONTEXT_CHARS = 1500  # of the turns before the ask: the turn right before usually says what "it" refers to
HARNESS_TOOLS = 5  # an application offering its own few functions is not an agent harness
HARNESS_SYSTEM_CHARS = 2000  # system and developer text; a chat persona prompt is shorter
# A tagged block is the harness's when its tag says so: reminders, context and environment preambles,
# instructions, command echoes and hook output. Other tags (a user's <template>, <task>, <div>) are kept.
_INJECTED_TAG_WORDS = ("reminder", "context", "environment", "instruction", "caveat", "command", "stdout", "stderr",
                       "hook", "system")
_TAGGED = re.compile(r"<([A-Za-z][\w\- ]{0,48})>.*?</\1>", re.S)
_SYSTEM_ROLES = ("system", "developer")
_TOOL_ROLES = ("tool", "function")


def _parts(content: list) -> list[str]:
    """The texts of a parts array: plain strings and parts with a string ``text`` (images and the rest have none)."""
    texts = []
    for part in content:
        if isinstance(part, dict):
            part = part.get("text")
        if isinstance(part, str):
            texts.append(part)
    return texts


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a parts array; numbers as their digits."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_parts(content))
    if isinstance(content, (int, float)):
        return str(content)
    return ""  # None, or a shape no client sends: nothing to read


def content_chars(content: object) -> int:
    """``len(content_text(content))`` without joining the text."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        texts = _parts(content)
        return sum(map(len, texts)) + max(len(texts) - 1, 0)
    return len(str(content)) if isinstance(content, (int, float)) else 0


def _injected(match: re.Match) -> str:
    tag = match.group(1).lower()
    return "" if any(word in tag for word in _INJECTED_TAG_WORDS) else match.group(0)


def strip_injections(text: str) -> str:
    """``text`` without the blocks a harness injects (``<system-reminder>…</system-reminder>`` and the like)."""
    return _TAGGED.sub(_injected, text) if "</" in text else text


class Reading(NamedTuple):
    ask: str | None  # the newest user-authored text; None when no user turn has any
    earlier: str  # up to CONTEXT_CHARS of the turns before the ask, injections removed; system turns never
    total_chars: int  # every message's text, system prompts included: the prompt's size
    system_chars: int  # the system and developer messages' share of it
    tool_exchange: bool  # an assistant tool call answered by a tool turn, anywhere
    mid_loop: bool  # the newest turn is a tool result
    harness: bool  # shaped like a coding agent's request


class _Scan:
    """The state of one backward pass: sizes of every message, the text of the newest turns only."""

    __slots__ = ("ask", "context", "gathered", "mid_loop", "injected", "seen_turn")

    def __init__(self) -> None:
        self.ask: str | None = None
        self.context: list[str] = []
        self.gathered = 0
        self.mid_loop = self.injected = self.seen_turn = False

    def turn(self, role: object, raw: str) -> bool:
        """Read one user, assistant or tool turn, newest first; False once the context is full."""
        text = strip_injections(raw) if role == "user" else raw
        self.injected = self.injected or len(text) != len(raw)
        if self.ask is None:
            if role == "user" and (text.strip() or text == raw):
                self.ask = text  # a blank turn still counts (as no task); one that held only injections does not
            elif role != "user":
                self.mid_loop = self.mid_loop or (not self.seen_turn and role in _TOOL_ROLES)
                self.seen_turn = True
            return True
        self.context.append(text)
        self.gathered += len(text) + 1
        return self.gathered <= CONTEXT_CHARS


def read(messages: object, tools: object = None) -> Reading:
    """One pass from the newest message back: every message is measured, only the newest turns are read."""
    items = messages if isinstance(messages, list) else []
    scan = _Scan()
    reading = True
    total = system = count = 0
    system_after = tool_after = tool_exchange = inside = False
    for m in reversed(items):
        if not isinstance(m, dict):
            continue
        count += 1
        role, content = m.get("role"), m.get("content")
        if role in _SYSTEM_ROLES:
            size = content_chars(content)
            total += size
            system += size
            system_after = True
            continue
        inside = inside or system_after  # a system message came after this turn
        if role in _TOOL_ROLES:
            tool_after = True
        elif role == "assistant" and tool_after and (m.get("tool_calls") or m.get("function_call")):
            tool_exchange = True
        if not reading:
            total += content_chars(content)
            continue
        raw = content_text(content)
        total += len(raw)
        reading = scan.turn(role, raw)
    many_tools = isinstance(tools, list) and len(tools) >= HARNESS_TOOLS
    harness = many_tools or system >= HARNESS_SYSTEM_CHARS or scan.injected or inside
    return Reading(scan.ask, "\n".join(reversed(scan.context))[-CONTEXT_CHARS:], total + max(count - 1, 0), system,
                   tool_exchange, scan.mid_loop, harness)
