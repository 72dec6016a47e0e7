"""The agent doors' pure parts with plain data: how a Messages or Responses body becomes the classifier's
chat-shaped input, the token estimate, validation, the error dialects, and the two named-event stream
formats in the relay."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ollama_agent_router.api import anthropic, responses
from ollama_agent_router.api.explain import conversation_of
from ollama_agent_router.api.table import Route, RouteTable
from ollama_agent_router.config.schema import ModelSpec
from ollama_agent_router.errors import HttpError, render_error
from ollama_agent_router.relay import ANTHROPIC_SSE, RESPONSES_SSE, StreamFormat, StreamStats, relay

TOOL_USE = {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "sunny"}]}


# ---- Anthropic Messages -> the classifier's input -----------------------------------------------------------

def test_messages_become_chat_turns_in_ollamas_order():
    body = {"system": [{"type": "text", "text": "You are"}, {"type": "text", "text": "Claude Code."}],
            "tools": [{"name": "get_weather", "input_schema": {}}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, TOOL_USE]},
                {"role": "user", "content": [TOOL_RESULT, {"type": "text", "text": "and tomorrow?"},
                                             {"type": "image", "source": {}}, "junk"]},
                {"role": "system", "content": "a reminder"}]}
    assert anthropic.classifier_input(body) == {"tools": body["tools"], "messages": [
        {"role": "system", "content": "You are\nClaude Code."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "user", "content": "and tomorrow?"},
        {"role": "system", "content": "a reminder"}]}
    assert anthropic.classifier_input({"system": "Be brief.", "messages": [{"role": "user", "content": 3}]}) == {
        "tools": None, "messages": [{"role": "system", "content": "Be brief."}]}


def test_token_estimate_counts_text_tool_calls_and_tools():
    conversation = {"messages": [{"role": "user", "content": "x" * 40},
                                 {"role": "assistant", "content": "", "tool_calls": [
                                     {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}],
                    "tools": [{"name": "f"}]}
    assert anthropic.estimate_tokens(conversation) == (4 + 40 + 9 + 7 + len('[{"name":"f"}]')) // 4
    assert anthropic.estimate_tokens({"messages": [], "tools": None}) == 1


@pytest.mark.parametrize("body,message", [
    ({"max_tokens": 8, "messages": []}, "messages is required"),
    ({"max_tokens": 8, "messages": ["hi"]}, "messages[0] must be an object with a string role"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens is required and must be positive"),
    ({"max_tokens": True, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens is required"),
    ({"max_tokens": 8, "stream": "yes", "messages": [{"role": "user"}]}, "stream must be a boolean"),
    ({"max_tokens": 8, "system": 3, "messages": [{"role": "user"}]}, "system must be a string or an array"),
    ({"max_tokens": 8, "model": 3, "messages": [{"role": "user"}]}, "model must be a string"),
])
def test_messages_validation(body, message):
    with pytest.raises(HttpError) as e:
        anthropic.validate_create(body)
    assert e.value.status == 400 and e.value.message.startswith(message)


# ---- OpenAI Responses -> the classifier's input -------------------------------------------------------------

def test_responses_input_becomes_chat_turns():
    body = {"instructions": "Be Codex.", "tools": [{"type": "function", "name": "f"}], "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "sandbox"}]},
        {"type": "message", "role": "user", "content": "fix it"},
        {"type": "reasoning", "summary": [], "encrypted_content": "thought"},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "custom_tool_call"}, {"content": "no role"}, 7]}
    assert responses.classifier_input(body) == {"tools": body["tools"], "messages": [
        {"role": "system", "content": "Be Codex."},
        {"role": "developer", "content": [{"type": "input_text", "text": "sandbox"}]},
        {"role": "user", "content": "fix it"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
        {"role": "tool", "content": "ok"}]}
    assert responses.classifier_input({"input": "hi"}) == {"tools": None, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body,code", [
    ({"input": "x", "previous_response_id": "resp_1"}, "stateless_api"),
    ({"input": "x", "conversation": {"id": "conv_1"}}, "stateless_api"),
    ({"input": "x", "background": True}, "background_unsupported"),
    ({"input": {"a": 1}}, "invalid_body"),
    ({}, "invalid_body"),
    ({"input": "x", "tools": {}}, "invalid_body"),
    ({"input": "x", "stream": 1}, "invalid_body"),
])
def test_responses_validation(body, code):
    with pytest.raises(HttpError) as e:
        responses.validate_responses(body)
    assert e.value.status == 400 and e.value.code == code


def test_responses_validation_lets_nulls_and_store_through():
    body = {"input": "x", "previous_response_id": None, "background": False, "store": True, "reasoning": None}
    assert responses.validate_responses(body) is body


def test_only_models_labelled_reasoning_or_thinking_can_think():
    def spec(purpose: tuple[str, ...], tags: tuple[str, ...]) -> ModelSpec:
        return ModelSpec(name="m", size_gb=1, purpose=purpose, tags=tags, max_concurrent=1, default_context=2048,
                         max_context=2048, timeout_ms=1000)

    assert responses.can_think(spec(("agentic_reasoning",), ("Reasoning",)))
    assert responses.can_think(spec(("thinking",), ()))
    assert not responses.can_think(spec(("agentic_reasoning", "code_fix"), ("heavy",)))


def test_the_explainer_tells_the_three_shapes_apart():
    hi = [{"role": "user", "content": "hi"}]
    assert conversation_of({"messages": hi})[0] == "openai"
    assert conversation_of({"messages": hi, "system": "x", "max_tokens": 1})[0] == "anthropic"
    assert conversation_of({"messages": hi, "tools": [{"name": "f", "input_schema": {}}]})[0] == "anthropic"
    assert conversation_of({"messages": [{"role": "user", "content": [TOOL_RESULT]}]})[0] == "anthropic"
    assert conversation_of({"input": "hi"})[0] == "responses"


# ---- error dialects -----------------------------------------------------------------------------------------

def test_one_error_in_each_dialect():
    err = HttpError(503, "busy", code="queue_timeout", extra={"attempts": [{"model": "m"}]})
    assert json.loads(render_error(err, "openai")) == {"error": {"message": "busy", "type": "api_error",
                                                                 "code": "queue_timeout", "attempts": [{"model": "m"}]}}
    assert json.loads(render_error(err, "anthropic")) == {"type": "error", "error": {
        "type": "overloaded_error", "message": "busy", "code": "queue_timeout", "attempts": [{"model": "m"}]}}
    assert json.loads(render_error(err, "ollama")) == {"error": "busy", "code": "queue_timeout",
                                                      "attempts": [{"model": "m"}]}
    kinds = {s: json.loads(render_error(HttpError(s, "x"), "anthropic"))["error"]["type"]
             for s in (400, 401, 403, 404, 405, 413, 429, 500, 502, 504, 529)}
    assert kinds == {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                     429: "rate_limit_error", 500: "api_error", 502: "api_error", 504: "timeout_error",
                     529: "overloaded_error"}


def test_a_path_takes_the_dialect_of_the_longest_prefix_that_owns_it():
    async def handler(req, params):  # pragma: no cover - never called
        raise AssertionError

    table = RouteTable([Route("POST", "/v1/messages", None, handler)], "/r",
                       {"/api": "ollama", "/v1/messages": "anthropic", "/v1": "openai"})
    expected = {"/r/api/tags": "ollama", "/r/api": "ollama", "/r/API/chat/": "ollama", "/r/apix": "openai",
                "/r/v1/messages": "anthropic", "/r/v1/messages/batches": "anthropic", "/r/v1/messagesx": "openai",
                "/r/v1/chat/completions": "openai", "/api/tags": "openai", "/r": "openai"}
    assert {path: table.dialect(path) for path in expected} == expected
    assert json.loads(table.error_body("/r/api/x", HttpError(404, "Not found"))) == {"error": "Not found",
                                                                                  "code": "not_found"}


# ---- the named-event stream formats --------------------------------------------------------------------------

class _Upstream:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def chunks(self):
        for piece in self.pieces:
            yield piece

    def close(self) -> None:
        pass


def relayed(pieces: list[bytes], fmt: StreamFormat) -> tuple[bytes, StreamStats]:
    stats = StreamStats()

    async def main() -> bytes:
        return b"".join([c async for c in relay(_Upstream(pieces), fmt, stats, time.perf_counter)])

    return asyncio.run(main()), stats


def event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def test_a_whole_anthropic_stream_passes_untouched_and_its_final_usage_counts():
    pieces = [event("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 3,
                                                                                      "output_tokens": 0}}}),
              event("message_delta", {"type": "message_delta", "delta": {}, "usage": {"input_tokens": 9,
                                                                                     "output_tokens": 4}}),
              event("message_stop", {"type": "message_stop"})]
    out, stats = relayed(pieces, ANTHROPIC_SSE)
    assert out == b"".join(pieces) and stats.completed and stats.error is None and stats.chunks == 3
    assert stats.usage == {"input_tokens": 9, "output_tokens": 4}


def test_a_cut_anthropic_stream_ends_with_anthropics_error_event():
    out, stats = relayed([event("message_start", {"type": "message_start"}), b"event: content_block_start\nda"],
                         ANTHROPIC_SSE)
    last = out.split(b"\n\n")[-2].split(b"\n")
    assert last[0] == b"event: error" and not stats.completed
    assert json.loads(last[1][len(b"data: "):])["error"]["type"] == "api_error"


def test_responses_usage_is_read_inside_the_final_response():
    done = event("response.completed", {"response": {"id": "resp_1", "usage": {"input_tokens": 5, "output_tokens": 2,
                                                                               "total_tokens": 7}},
                                        "type": "response.completed"})
    out, stats = relayed([event("response.created", {"response": {"usage": None}}), done], RESPONSES_SSE)
    assert stats.completed and stats.usage == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    cut, cut_stats = relayed([event("response.created", {"response": {}})], RESPONSES_SSE)
    error = json.loads(cut.split(b"\n\n")[-2].split(b"\n")[1][len(b"data: "):])
    assert error["type"] == "error" and error["error"]["code"] == "upstream_stream_error" and not cut_stats.completed
    failed, failed_stats = relayed([event("response.failed", {"response": {"error": {"message": "x"}}})], RESPONSES_SSE)
    assert failed.count(b"event: ") == 1 and failed_stats.completed and failed_stats.error  # its own end
