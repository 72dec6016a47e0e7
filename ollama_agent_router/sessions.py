"""Sticky conversations: which model each agent conversation runs on, so its later turns stay there.

Switching models mid-conversation throws away Ollama's prompt cache (the next turn re-reads a 20k-token
prompt from scratch) and changes the voice mid-task. So the runner remembers, per conversation, the model
that answered its latest turn, and the route step prefers it while it can run (``routing.decide``'s
``sticky``).

A conversation is named by, in order of preference:

1. a session header: Claude Code's ``X-Claude-Code-Session-Id``, Codex's ``session-id``; Claude Code's
   sub-agents share their parent's session id and add ``X-Claude-Code-Agent-Id``, which is made part of the
   key, since each sub-agent is a conversation (and a prompt cache) of its own;
2. a body field: ``prompt_cache_key`` (Codex, OpenAI), or the ``session_id`` inside Anthropic's
   ``metadata.user_id`` JSON (Claude Code);
3. for a harness-shaped request without either, a hash of its system prompt and first user message
   (``conversation_hash``). A plain chat client names no conversation: each of its turns is routed on its own.

Keys are stored as SHA-256 digests (a client's strings are never kept), in a map bounded in size and
forgetting a conversation idle for longer than its TTL. Pure apart from the clock it is given.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, NamedTuple

from .harness import content_text, strip_injections

SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "x-session-id")
AGENT_HEADERS = ("x-claude-code-agent-id",)
MAX_ID_CHARS = 256  # a longer id is not an id: no key from it
MAX_USER_ID_CHARS = 4096  # metadata.user_id is parsed as JSON only up to this size
# Claude Code puts a per-request billing line first in its system prompt (wire-formats §7.12): not the prompt.
_VOLATILE_SYSTEM_PREFIX = "x-anthropic-billing-header:"


class Key(NamedTuple):
    digest: str  # what the map is keyed by
    source: str  # header | body | hash


def _digest(source: str, *parts: str) -> Key:
    h = hashlib.sha256(source.encode())
    for part in parts:
        h.update(b"\0" + part.encode("utf-8", "surrogatepass"))
    return Key(h.hexdigest()[:32], source)


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS else None


def header_key(headers: Mapping[str, str]) -> Key | None:
    for name in SESSION_HEADERS:  # a loop, not a generator: this runs for every routed request
        session = _id(headers.get(name))
        if session is not None:
            agent = next((v for name in AGENT_HEADERS if (v := _id(headers.get(name))) is not None), "")
            return _digest("header", session, agent)
    return None


def body_key(body: Mapping[str, Any]) -> Key | None:
    cache_key = _id(body.get("prompt_cache_key"))
    if cache_key is not None:
        return _digest("body", cache_key)
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id.startswith("{") or len(user_id) > MAX_USER_ID_CHARS:
        return None
    try:
        session = _id(json.loads(user_id).get("session_id"))
    except (ValueError, AttributeError, RecursionError):
        return None
    return _digest("body", session) if session is not None else None


def conversation_hash(messages: list) -> Key | None:
    """The leading system prompt and the first user-authored message: what every turn of one conversation
    repeats, and what two conversations rarely share."""
    system: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        text = content_text(m.get("content"))
        if m.get("role") in ("system", "developer"):
            system.append(text.partition("\n")[2] if text.startswith(_VOLATILE_SYSTEM_PREFIX) else text)
        elif m.get("role") == "user" and (first := strip_injections(text).strip()):
            return _digest("hash", "\n".join(system), first)
    return None


def explicit_key(headers: Mapping[str, str], body: Mapping[str, Any]) -> Key | None:
    """The conversation a request names itself, by a header or else a body field."""
    return header_key(headers) or body_key(body)


class Sessions:
    """Conversation -> the model that answered its latest turn, least recently used first."""

    def __init__(self, max_conversations: int, idle_ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_conversations = max_conversations
        self.idle_ttl_s = idle_ttl_s
        self.clock = clock
        self._models: OrderedDict[str, tuple[str, float]] = OrderedDict()  # digest -> (model, last seen)

    def model(self, key: Key | None) -> str | None:
        """The conversation's model, or None when it is new or was idle past the TTL. Reading does not count as
        activity: only an answered turn (``remember``) does, so a dry run keeps nothing alive."""
        if key is None:
            return None
        self._expire()
        entry = self._models.get(key.digest)
        return entry[0] if entry is not None else None

    def remember(self, key: Key, model: str) -> None:
        self._models[key.digest] = (model, self.clock())
        self._models.move_to_end(key.digest)
        while len(self._models) > self.max_conversations:
            self._models.popitem(last=False)

    def __len__(self) -> int:
        self._expire()
        return len(self._models)

    def _expire(self) -> None:
        """Drop the conversations idle past the TTL: they sit at the front, in last-seen order."""
        horizon = self.clock() - self.idle_ttl_s
        models = self._models
        while models:
            digest, (_, seen) = next(iter(models.items()))
            if seen > horizon:
                break
            del models[digest]
