"""Wide JSON no longer freezes the event loop (issue 15, item 4): the parse counts values and depth in one
pass, gives the loop back every few milliseconds, and refuses a body past MAX_JSON_VALUES."""

from __future__ import annotations

import json

import pytest
from bounds_support import LoopWatch
from conftest import TEST_CONFIG, VIBE, chat_body
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_agent_router.api.bodies import MAX_JSON_VALUES
from ollama_agent_router.jsonutil import JsonLimit, parse_json_steps

# Far above what the sliced parse holds the loop for (a few ms a slice, plus a garbage collection on a busy
# machine), far below the seconds it was held before; bench/drills/bounds.py measures the real figure.
HELD = 0.5
WIDE = b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":[' + b",".join([b"[]"] * 2_700_000) + b"]}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/router/execute", "/v1/embeddings"])
def test_a_wide_body_is_refused_and_the_loop_keeps_running(stack_factory, path):
    stack = stack_factory({"server": {"requestBodyLimit": "8mb"}})
    watch = LoopWatch()
    stack.call(watch.start())
    r = stack.request("POST", path, raw=WIDE)
    worst = stack.call(watch.stop())
    # Each door answers in its API's error shape: Ollama's {"error": "...", "code": ...} under /api.
    error = r.json() if path.startswith("/api/") else r.json()["error"]
    message = error["error"] if path.startswith("/api/") else error["message"]
    assert r.status == 400 and error["code"] == "invalid_json", r
    assert f"more than {MAX_JSON_VALUES} values" in message
    assert worst < HELD, f"the loop was held for {worst * 1000:.0f} ms"


def test_a_long_conversation_under_the_bound_is_served(stack_factory):
    # Models that hold the whole conversation (~68k tokens), so the context check lets it through.
    models = [dict(m, maxContext=1_000_000) for m in TEST_CONFIG["models"]]
    stack = stack_factory({"server": {"requestBodyLimit": "8mb"}, "models": models})
    body = chat_body("hello")
    body["messages"] = [{"role": "user", "content": f"message {i}"} for i in range(20_000)] + body["messages"]
    watch = LoopWatch()
    stack.call(watch.start())
    r = stack.request("POST", "/v1/chat/completions", body)
    worst = stack.call(watch.stop())
    assert r.status == 200, r
    assert worst < HELD, f"the loop was held for {worst * 1000:.0f} ms"
    sent = stack.chat_calls()[-1]["body"]
    assert len(sent["messages"]) == 20_001 and sent["model"] == r.json()["router"]["selectedModel"]


def test_kong_execute_forwards_a_spliced_large_body(stack):
    request = chat_body("x" * 20_000)
    request["router"] = {"priority": "high"}
    r = stack.request("POST", "/v1/router/execute", {"selectedModel": VIBE, "request": request})
    assert r.status == 200 and json.loads(r.body)["selectedModel"] == VIBE, r


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)


def parsed(text: str, max_values: int = 10**6, max_depth: int = 10**6):
    steps = parse_json_steps(text, max_values, max_depth, step=3)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, 1, 2]))
def test_the_bounded_parse_reads_what_json_loads_reads(value, indent):
    assert parsed(json.dumps(value, indent=indent)) == value


@pytest.mark.parametrize("text", ["[1,]", '{"a":1,}', '{"a" 1}', "[1 2]", "{", "[", '"abc', '{"a":1} x', "", "{1:2}",
                                  "[1]]", "]", '{"a":}', "nul", "[-]", '{"a\x00":1}', "[[1,]]", '{"a":[1}'])
def test_malformed_json_is_a_decode_error(text):
    with pytest.raises(json.JSONDecodeError):
        parsed(text)


def test_values_and_depth_are_counted_exactly():
    assert parsed("[1,2,[3]]", max_values=5) == [1, 2, [3]]
    with pytest.raises(JsonLimit, match="more than 4 values"):
        parsed("[1,2,[3]]", max_values=4)
    assert parsed('{"a":{"b":[]}}', max_depth=3) == {"a": {"b": []}}
    with pytest.raises(JsonLimit, match="deeper than 2 levels"):
        parsed('{"a":{"b":[]}}', max_depth=2)
