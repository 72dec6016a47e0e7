"""JSON helpers of the hot path: member splicing of large bodies, reply splicing, JS-compatible rounding."""

import asyncio
import json
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
from conftest import chat_body
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_agent_router.jsonutil import (
    JsonObject,
    add_member,
    parse_json_sliced,
    splice_members,
    to_fixed1,
    usage_figures,
)

BIG = "lorem ipsum dolor sit amet " * 400  # pushes a body over the splicing threshold


def parse_json(text: str):
    return asyncio.run(parse_json_sliced(text, 100_000, 200))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def spaced(obj: dict, rng: random.Random) -> str:
    """The object as JSON with random (valid) whitespace between top-level tokens."""
    ws = lambda: rng.choice(["", " ", "\n", "\t ", "\r\n  "])  # noqa: E731
    members = [f"{ws()}{json.dumps(k)}{ws()}:{ws()}{json.dumps(v)}{ws()}" for k, v in obj.items()]
    return ws() + "{" + ",".join(members) + ("}" if members else ws() + "}") + ws()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(0, 2**32))
def test_splice_matches_a_full_round_trip(members, seed):
    obj = dict(members, padding=BIG)
    text = spaced(obj, random.Random(seed))
    parsed = parse_json(text)
    assert isinstance(parsed, JsonObject) and parsed == obj
    out = json.loads(splice_members(parsed, {"model": "m:7b", "stream": False}, frozenset({"router"})))
    expected = {k: v for k, v in obj.items() if k != "router"}
    expected.update(model="m:7b", stream=False)
    assert out == expected


def test_duplicate_members_keep_the_last_value_and_are_all_dropped():
    text = '{"router": 1, "model": "a", "x": "' + BIG + '", "model": "b", "router": 2}'
    parsed = parse_json(text)
    assert parsed["model"] == "b"
    out = splice_members(parsed, {"model": "m"}, frozenset({"router"})).decode()
    assert out.count('"model"') == 1 and '"router"' not in out and json.loads(out)["model"] == "m"


@pytest.mark.parametrize("text", ['{"a":1,}', '{"a" 1}', '{"a":1} x', "{", '{"a":1 "b":2}'])
def test_malformed_large_objects_raise_the_standard_error(text):
    with pytest.raises(ValueError):
        parse_json(text.replace("1", '"' + BIG + '"', 1))


def test_small_bodies_and_non_objects_are_plain_json():
    assert type(parse_json('{"a": 1}')) is dict
    assert parse_json("[1, 2]") == [1, 2] and parse_json('"s"') == "s"


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b'{"id":"x"}', {"id": "x", "router": {"m": 1}}),
        (b' {} \n', {"router": {"m": 1}}),
        (b'[1,2]', None),
        (b'{"router":{"old":true}}', None),
        (b'not json', None),
    ],
)
def test_add_member(raw, expected):
    out = add_member(raw, "router", {"m": 1})
    assert (json.loads(out) if out is not None else None) == expected


def test_usage_figures():
    assert usage_figures(b'{"usage":{"prompt_tokens":3,"completion_tokens": 17}}') == {"completion_tokens": 17}
    assert usage_figures(b'{"usage":{"input_tokens":3,"output_tokens":5}}') == {"output_tokens": 5}
    assert usage_figures(b'{"done":true,"eval_count":9,"eval_duration":300}') == {"eval_count": 9, "eval_duration": 300}
    assert usage_figures(b'{"usage":{}}') is None


def test_to_fixed1_is_javascript_tofixed():
    reference = lambda x: str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))  # noqa: E731
    rng = random.Random(7)
    values = [270.25, 0.05, -0.05, 298.109375, 0.25, -2.5, 123.45] + [rng.randint(-20000, 20000) / 40 for _ in range(20000)]
    values += [rng.uniform(-500, 500) for _ in range(20000)]
    assert [to_fixed1(v) for v in values] == [reference(v) for v in values]
    assert to_fixed1(270.25) == "270.3"  # Python's own format would say 270.2


def test_large_body_is_forwarded_by_splicing(stack):
    body = chat_body("Summarize this: " + BIG, taskType="summarize")
    body["temperature"] = 0.1
    r = stack.request("POST", "/v1/chat/completions", body)
    assert r.status == 200, r
    sent = stack.chat_calls()[-1]["body"]
    assert "router" not in sent and sent["model"] == r.json()["router"]["selectedModel"]
    assert sent["messages"] == body["messages"] and sent["temperature"] == 0.1 and sent["stream"] is False
