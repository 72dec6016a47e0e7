"""Context fit: how many tokens of context a request needs, and the ``num_ctx`` to ask Ollama for.

A model whose ``maxContext`` cannot hold the request is blocked (``routing.decide``'s ``context``), so Ollama
never silently cuts the start of a prompt (an agent's system prompt and tools) to make it fit.

The need is a len/4 estimate, Ollama's own rule for ``message_start`` (wire-formats §7.6.3): the text of every
message (the classifier's ``token_estimate``), the tool definitions as sent, and the output the client asks
for, up to ``OUTPUT_RESERVE`` (``DEFAULT_REPLY`` when it sets no limit: a prompt that just fits leaves no room
to answer). Agents ask for their API's ceiling (Claude Code sends ``max_tokens: 64000``), not for the reply
they expect: reserving all of it would leave no local model able to take a first turn.
Images are not counted: they are not text, and their base64 would count for a hundred times their tokens.
"""

from __future__ import annotations

import math
from typing import Any

from .config.schema import ModelSpec
from .jsonutil import JsonObject, dumps

OUTPUT_RESERVE = 4096  # tokens kept free for the reply, at most
DEFAULT_REPLY = 1024  # kept free when the client sets no limit
# Where each API says how long the reply may be.
_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def requested_output(body: dict) -> int | None:
    """The reply length the client allows: ``max_tokens`` (OpenAI, Anthropic), ``max_completion_tokens``,
    ``max_output_tokens`` (Responses) or ``options.num_predict`` (native)."""
    for name in _OUTPUT_FIELDS:
        if (n := _count(body.get(name))) is not None:
            return n
    options = body.get("options")
    return _count(options.get("num_predict")) if isinstance(options, dict) else None


def tools_chars(body: dict) -> int:
    """The size of the ``tools`` the client sent, as sent: a large body keeps its members' spans, so this is
    free where it matters (an agent's catalogue is 60 KB); a small one is serialised."""
    tools = body.get("tools")
    if not tools:
        return 0
    if isinstance(body, JsonObject):
        return sum(end - start for key, start, end in body.members if key == "tools")
    return len(dumps(tools))


def context_need(text_tokens: int, body: dict) -> int:
    """Tokens of context the request needs: its text, its tools and the reserve for the reply."""
    return text_tokens + math.ceil(tools_chars(body) / 4) + min(requested_output(body) or DEFAULT_REPLY, OUTPUT_RESERVE)


def num_ctx_for(need: int, spec: ModelSpec) -> int | None:
    """The ``num_ctx`` to send on the native API, or None to leave the model at its default.

    Ollama reloads a model whenever a request's ``num_ctx`` differs from the loaded one's (wire-formats §3),
    so it is raised only when the default cannot hold the request, and then to the next power of two (capped
    at ``maxContext``): requests of similar size ask for the same value and share one loaded runner."""
    if need <= spec.default_context:
        return None
    return min(spec.max_context, 1 << (need - 1).bit_length())
