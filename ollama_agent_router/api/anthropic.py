"""The Anthropic Messages door: ``/v1/messages`` for Claude Code and the anthropic SDKs (wire-formats §7).

A request is classified like a chat completion and runs on the chosen model through Ollama's own
``/v1/messages``: the body goes on untouched except ``model``, and the reply comes back as Ollama wrote it.
Streams relay Anthropic's named events byte for byte, with the routing decision in ``X-Router-*`` headers
only: an Anthropic stream has no place for anything else (SDKs drop events they do not know, and Ollama
sends no comments, so no client has been shown to accept one). Every error under ``/v1/messages`` is
written in Anthropic's shape (``ERROR_DIALECT``).

``/v1/messages/count_tokens`` is answered here: Ollama has no such route (§7.2), and a len/4 estimate is
what Ollama itself puts in ``message_start``.
"""

from __future__ import annotations

from typing import Any

from ..config.schema import Config
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse, json_response
from ..jsonutil import dumps
from ..relay import ANTHROPIC_SSE
from ..runner import Call, Renderer, Runner, forward_body
from .bodies import check_messages, check_types, read_json_object
from .render import routed_reply
from .routed import PLANE, answer, route_now, routed_call
from .table import Route

ERROR_DIALECT = ("/v1/messages", "anthropic")
# Passed on to Ollama as the Anthropic gateway protocol asks (Ollama itself ignores them, §7.3).
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


def content_blocks(content: Any) -> list[dict]:
    """A message's ``content`` as blocks: a string is one text block; anything not a block is left out."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def block_text(content: Any) -> str:
    """The text of a string or of the text blocks in ``content`` (a system prompt, a tool result)."""
    return "\n".join(b["text"] for b in content_blocks(content) if b.get("type") == "text" and isinstance(b.get("text"), str))


def _turns(message: dict) -> list[dict]:
    """One Anthropic message as chat turns, in the order Ollama gives them to the model (§7.4): each
    ``tool_result`` as a ``tool`` turn, then the message's text with its ``tool_use`` blocks as tool calls."""
    turns: list[dict] = []
    texts: list[str] = []
    calls: list[dict] = []
    for block in content_blocks(message.get("content")):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append({"type": "function", "function": {"name": str(block.get("name", "")),
                                                           "arguments": block.get("input")}})
        elif kind == "tool_result":
            turns.append({"role": "tool", "content": block_text(block.get("content"))})
    if texts or calls:
        turn: dict[str, Any] = {"role": message["role"], "content": "\n".join(texts)}
        if calls:
            turn["tool_calls"] = calls
        turns.append(turn)
    return turns


def classifier_input(body: dict) -> dict:
    """The conversation as the classifier reads a chat completion: the system prompt (a string or text
    blocks), text blocks, ``tool_use`` as assistant tool calls, ``tool_result`` as tool turns, and ``tools``.
    Images and thinking blocks carry no task signal and are left out."""
    messages: list[dict] = []
    system = block_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body["messages"]:
        messages.extend(_turns(message))
    return {"messages": messages, "tools": body.get("tools")}


def estimate_tokens(conversation: dict) -> int:
    """A len/4 estimate of a prompt (Ollama's rule for ``message_start``, §7.6.3): the texts the model reads,
    tool calls' arguments and the tool definitions. Images are not counted."""
    chars = 0
    for turn in conversation["messages"]:
        chars += len(turn["role"]) + len(turn["content"])
        chars += sum(len(dumps(call["function"]["arguments"])) for call in turn.get("tool_calls", ()))
    tools = conversation.get("tools")
    if isinstance(tools, list):
        chars += len(dumps(tools))
    return max(1, chars // 4)


def validate_messages(body: dict) -> dict:
    """What the door reads must have the shape it reads; the rest is Ollama's to check (§7.4)."""
    check_messages(body.get("messages"), "messages is required")  # Ollama's words (§7.7)
    check_types(body, (("model", str, "a string"), ("system", (str, list), "a string or an array of blocks"),
                       ("tools", list, "an array")))
    return body


def validate_create(body: dict) -> dict:
    """A ``messages.create`` body: ``max_tokens`` is required there, and ``stream`` is a boolean."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise HttpError(400, "max_tokens is required and must be positive", code="invalid_body")
    check_types(body, (("stream", bool, "a boolean"),))
    return validate_messages(body)


class AnthropicDoor:
    def __init__(self, cfg: Config, runner: Runner) -> None:
        self.cfg = cfg
        self.runner = runner
        # Ollama serves Anthropic's API beside its OpenAI layer, under the same /v1 prefix.
        self.path = cfg.ollama.open_ai_compatible_path.removesuffix("/chat/completions") + "/messages"

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/messages", PLANE, self.messages),
            Route("POST", "/v1/messages/count_tokens", PLANE, self.count_tokens),
        ]

    async def messages(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await answer(self.runner, req, "anthropic", self._prepare)

    async def _prepare(self, req: Request) -> tuple[Call, Renderer]:
        body = validate_create(await read_json_object(req))
        routed = route_now(self.runner, self.cfg, req, body, classifier_input(body), door="Anthropic Messages")
        # The query (Claude Code's ?beta=true) and the protocol headers go on as the client sent them.
        path = f"{self.path}?{req.query}" if req.query else self.path
        headers = [(name, req.headers[name]) for name in PASSED_HEADERS if name in req.headers]
        call = routed_call(req, routed, path, lambda m: forward_body(body, m), api="anthropic",
                           stream=ANTHROPIC_SSE if body.get("stream") is True else None, headers=headers)
        return call, routed_reply(routed, comment=False)

    async def count_tokens(self, req: Request, params: dict[str, str]) -> Response:
        body = validate_messages(await read_json_object(req))
        return json_response(200, {"input_tokens": estimate_tokens(classifier_input(body))})
