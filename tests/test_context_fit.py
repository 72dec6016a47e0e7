"""Context fit (fit.py): a model that cannot hold the request is blocked, never silently truncated; the native
API is given a ``num_ctx`` that holds it."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, make_config

from ollama_agent_router.fit import (
    DEFAULT_REPLY,
    OUTPUT_RESERVE,
    context_need,
    num_ctx_for,
    requested_output,
    tools_chars,
)
from ollama_agent_router.jsonutil import parse_json_sliced
from ollama_agent_router.options import normalize_meta
from ollama_agent_router.routing import RoutingTable, RuntimeView, decide

CFG = make_config()
TABLE = RoutingTable(CFG)
FREE = RuntimeView(19000, 0)
SPECS = {m.name: m for m in CFG.models}


@pytest.mark.parametrize("body, expected", [
    ({"max_tokens": 500}, 500), ({"max_completion_tokens": 300}, 300), ({"max_output_tokens": 200}, 200),
    ({"options": {"num_predict": 100}}, 100), ({"max_tokens": True}, None), ({"max_tokens": -1}, None),
    ({"options": {"num_predict": -1}}, None), ({"options": "x"}, None), ({}, None),
])
def test_the_reply_length_each_api_asks_for(body, expected):
    assert requested_output(body) == expected


def test_tools_are_sized_as_sent_and_a_large_bodys_span_is_free():
    tools = [{"name": f"tool{i}", "description": "d" * 400, "input_schema": {"type": "object"}} for i in range(30)]
    body = {"model": "auto", "messages": [], "tools": tools}
    parsed = asyncio.run(parse_json_sliced(json.dumps(body), 100_000, 200))  # a large body: a JsonObject
    assert len(json.dumps(tools)) <= tools_chars(parsed) <= len(json.dumps(tools)) + 10
    assert tools_chars(body) == len(json.dumps(tools, separators=(",", ":")))  # a small body: serialised
    assert tools_chars({"tools": []}) == 0 == tools_chars({})


def test_the_need_is_text_tools_and_a_capped_reply():
    body = {"tools": [{"x": "y" * 3998}], "max_tokens": 64_000}  # [{"x":"…"}]: 4,008 characters, 1,002 tokens
    assert context_need(1000, body) == 1000 + 1002 + OUTPUT_RESERVE
    assert context_need(1000, {"max_tokens": 100}) == 1100
    assert context_need(1000, {}) == 1000 + DEFAULT_REPLY  # no limit set: room to answer all the same


def test_num_ctx_is_raised_only_when_needed_and_to_a_stable_size():
    qwen = SPECS[QWEN]  # default 8,192, max 32,768
    assert num_ctx_for(8192, qwen) is None
    assert num_ctx_for(8193, qwen) == 16384 == num_ctx_for(16384, qwen)
    assert num_ctx_for(20000, qwen) == 32768 == num_ctx_for(32768, qwen)
    assert num_ctx_for(20000, SPECS[GPTOSS]) == 32768  # default 16,384: raised to the next power of two


def meta(**router):
    return normalize_meta(router, CFG)


def test_a_model_that_cannot_hold_the_request_is_blocked_with_the_figures():
    d = decide(meta(), "code_review", "medium", TABLE, FREE, context_tokens=19_500)
    assert d.model == QWEN
    assert [(c.name, c.blocked) for c in d.blocked] == [(DEEPSEEK, "context")]


def test_when_no_candidate_of_the_task_holds_it_the_smallest_model_that_does_is_chosen():
    d = decide(meta(), "summarize", "light", TABLE, FREE, context_tokens=12_000)  # summarize: vibethinker only
    assert d.model == DEEPSEEK and "the smallest model that does" in d.reason
    assert d.failover_order() == [QWEN, GPTOSS]
    assert decide(meta(), "summarize", "light", TABLE, FREE, context_tokens=20_000).model == QWEN
    forbidden = decide(meta(forbiddenModels=[DEEPSEEK]), "summarize", "light", TABLE, FREE, context_tokens=12_000)
    assert forbidden.model == QWEN


def test_a_pinned_model_too_small_is_refused_not_truncated():
    d = decide(meta(), "summarize", "light", TABLE, FREE, pinned=VIBE, context_tokens=12_000)
    assert d.action == "reject" and d.status == 503


def test_nothing_holds_it_is_a_503_that_says_why():
    d = decide(meta(), "summarize", "light", TABLE, FREE, context_tokens=70_000)
    assert d.action == "reject" and d.status == 503
    assert f"{VIBE}: context: needs ~70,000 tokens, model holds 8,192" in d.reason
    assert d.reason.endswith(f"no configured model holds it (the largest, {GPTOSS}, holds 65,536)")


# ---- through the router --------------------------------------------------------------------------------------
def native_chat(text: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], "stream": False, **extra}


def test_the_native_api_gets_a_num_ctx_that_holds_the_request(stack):
    big = "Summarize this log:\n" + "2026-12-06 INFO worker started, queue depth 3\n" * 1000  # ~12k tokens
    reply = stack.request("POST", "/api/chat", native_chat(big, options={"temperature": 0.1}))
    assert reply.status == 200 and reply.json()["model"] == DEEPSEEK  # vibethinker cannot hold it
    sent = stack.chat_calls(path="/api/chat")[-1]["body"]
    assert sent["options"] == {"temperature": 0.1, "num_ctx": 16384}
    assert stack.request("POST", "/api/chat", native_chat("hi")).status == 200
    assert "options" not in stack.chat_calls(path="/api/chat")[-1]["body"]  # the default holds it: no reload
    own = stack.request("POST", "/api/chat", native_chat(big, options={"num_ctx": 20000}))
    assert own.status == 200 and stack.chat_calls(path="/api/chat")[-1]["body"]["options"] == {"num_ctx": 20000}


def test_explain_names_the_models_too_small_for_the_request(stack):
    body = {"model": "auto", "max_tokens": 64_000, "system": "You are an agent. " * 300,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": f"t{i}", "description": "d" * 2000, "input_schema": {}} for i in range(30)]}
    out = stack.request("POST", "/v1/router/route", body).json()
    need = out["contextTokens"]
    assert 19_000 < need < 25_000 and out["selectedModel"] == QWEN and out["agentRequest"]
    blocked = {c["name"]: c["blockedReason"] for c in out["candidates"] if c.get("blocked") == "context"}
    assert blocked[VIBE] == f"context: needs ~{need:,} tokens, model holds 8,192"
