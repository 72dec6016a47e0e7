"""The OpenAI Responses door: ``/v1/responses`` for Codex CLI and the openai SDK's Responses API, stateless
as Ollama serves it (wire-formats §8).

A request is classified like a chat completion and runs on the chosen model through Ollama's own
``/v1/responses``; the reply, and on streams every event from ``response.created`` to
``response.completed``, comes back as Ollama wrote it, with the routing decision in ``X-Router-*`` headers.

Where Ollama would quietly do something a client does not expect, the door says so instead:

- ``previous_response_id`` and ``conversation`` ask for state Ollama does not keep: it ignores them and
  answers without the earlier context. Here they are a 400 that says the API is stateless.
- ``background: true`` is a 400 as well: Ollama runs it in the foreground, and the router's own async jobs
  are chat completions (``router.mode: async`` on ``/v1/chat/completions``). ``store`` is passed on and,
  as in Ollama, nothing is stored.
- ``reasoning`` is passed on only to a model labelled able to think (``reasoning`` or ``thinking`` in its
  ``purpose`` or ``tags``). Ollama answers any other model with a 400 "does not support thinking", and
  Codex sends ``reasoning`` on every request; the decision reason says when it was left out.
"""

from __future__ import annotations

from typing import Any, Callable

from ..config.schema import Config, ModelSpec
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse
from ..relay import RESPONSES_SSE
from ..routing import RoutingTable
from ..runner import Call, Exchange, Renderer, Routed, Runner, forward_body
from .bodies import check_types, read_json_object
from .render import RouterReply, router_object
from .routed import PLANE, answer, route_now, routed_call
from .table import Route

THINKING_LABELS = frozenset({"reasoning", "thinking"})
_STATEFUL = ("previous_response_id", "conversation")
_REASONING = frozenset({"reasoning"})


def can_think(spec: ModelSpec) -> bool:
    return not THINKING_LABELS.isdisjoint(label.lower() for label in spec.purpose + spec.tags)


def _item_turn(item: dict) -> dict | None:
    """One input item as a chat turn: a message, a function call (an assistant tool call) or its output (a
    tool turn). Reasoning and anything else carry no task signal."""
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message" and isinstance(item.get("role"), str):
        return {"role": item["role"], "content": item.get("content")}
    if kind == "function_call":
        call = {"name": str(item.get("name", "")), "arguments": item.get("arguments")}
        return {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}
    if kind == "function_call_output":
        return {"role": "tool", "content": item.get("output")}
    return None


def classifier_input(body: dict) -> dict:
    """The request as the classifier reads a chat completion: ``instructions`` as the system prompt,
    ``input`` (a string, or message, ``function_call`` and ``function_call_output`` items) and ``tools``.
    Message content may be a string or ``input_text``/``output_text`` parts: the classifier reads both."""
    messages: list[dict] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    given = body["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    else:
        messages.extend(t for t in map(_item_turn, (i for i in given if isinstance(i, dict))) if t is not None)
    return {"messages": messages, "tools": body.get("tools")}


def validate_responses(body: dict) -> dict:
    """What the door reads must have the shape it reads, and what it cannot honour is refused (see above)."""
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise HttpError(400, f"{key} cannot be honoured: /v1/responses is stateless here, as Ollama serves "
                            "it, and keeps no earlier responses. Send the whole conversation in input.",
                            code="stateless_api")
    if body.get("background") is True:
        raise HttpError(400, "background: true cannot be honoured: this router answers /v1/responses in the "
                        "foreground. Stream the response, or use /v1/chat/completions with router.mode async "
                        "for a job to poll", code="background_unsupported")
    if not isinstance(body.get("input"), (str, list)):
        raise HttpError(400, "input must be a string or an array of items", code="invalid_body")
    check_types(body, (("model", str, "a string"), ("instructions", str, "a string"), ("tools", list, "an array"),
                       ("stream", bool, "a boolean")))
    return body


class ResponsesDoor:
    def __init__(self, cfg: Config, runner: Runner, table: RoutingTable) -> None:
        self.cfg = cfg
        self.runner = runner
        self.thinkers = frozenset(name for name, spec in table.models.items() if can_think(spec))
        # Ollama serves the Responses API beside its chat completions, under the same /v1 prefix.
        self.path = cfg.ollama.open_ai_compatible_path.removesuffix("/chat/completions") + "/responses"

    def routes(self) -> list[Route]:
        return [Route("POST", "/v1/responses", PLANE, self.responses)]

    async def responses(self, req: Request, params: dict[str, str]) -> Response | StreamResponse:
        return await answer(self.runner, req, "responses", self._prepare)

    async def _prepare(self, req: Request) -> tuple[Call, Renderer]:
        body = validate_responses(await read_json_object(req))
        routed = route_now(self.runner, self.cfg, req, body, classifier_input(body), door="OpenAI Responses")
        asks_to_think = body.get("reasoning") is not None
        call = routed_call(req, routed, self.path, self._body_for(body, asks_to_think), api="responses",
                           stream=RESPONSES_SSE if body.get("stream") is True else None)
        return call, RouterReply(self._describe(routed, asks_to_think), comment=False)

    def _body_for(self, body: dict, asks_to_think: bool) -> Callable[[str], bytes]:
        def body_for(model: str) -> bytes:
            drop = _REASONING if asks_to_think and model not in self.thinkers else frozenset()
            return forward_body(body, model, without=drop)

        return body_for

    def _describe(self, routed: Routed, asks_to_think: bool) -> Callable[[Exchange], dict[str, Any]]:
        def describe(ex: Exchange) -> dict[str, Any]:
            router = router_object(routed, ex)
            if asks_to_think and ex.model not in self.thinkers:
                router["decisionReason"] += (f"; reasoning not passed on: {ex.model} is not labelled "
                                             "reasoning or thinking")
            return router

        return describe
