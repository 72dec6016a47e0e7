"""Sticky conversations: an agent conversation's later turns stay on the model its first turn ran on
(sessions.py, routing.decide's ``sticky``), through the real clients' doors."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, make_config

from ollama_agent_router.classifier_eval import load_cases
from ollama_agent_router.options import normalize_meta
from ollama_agent_router.routing import ModelState, RoutingTable, RuntimeView, decide
from ollama_agent_router.sessions import Key, Sessions, body_key, conversation_hash, explicit_key, header_key

AGENTS = Path(__file__).resolve().parent / "data" / "agents"
CFG = make_config()
TABLE = RoutingTable(CFG)
FREE = RuntimeView(19000, 0)


# ---- conversation keys ------------------------------------------------------------------------------------
def test_a_session_header_names_the_conversation_before_any_body_field():
    body = {"prompt_cache_key": "thread-1"}
    assert explicit_key({"x-claude-code-session-id": "s1"}, body).source == "header"
    assert explicit_key({}, body).source == "body"
    assert explicit_key({"session-id": "s1"}, {}) == explicit_key({"x-claude-code-session-id": "s1"}, {})
    assert explicit_key({}, {}) is None


def test_a_sub_agent_is_a_conversation_of_its_own():
    main = header_key({"x-claude-code-session-id": "s1"})
    sub = header_key({"x-claude-code-session-id": "s1", "x-claude-code-agent-id": "a7"})
    assert main != sub and sub == header_key({"x-claude-code-session-id": "s1", "x-claude-code-agent-id": "a7"})


def test_body_keys_codex_and_anthropic_metadata():
    assert body_key({"prompt_cache_key": "t1"}) == body_key({"prompt_cache_key": "t1"}) != body_key(
        {"prompt_cache_key": "t2"})
    user_id = json.dumps({"device_id": "d", "account_uuid": "", "session_id": "s9"})
    assert body_key({"metadata": {"user_id": user_id}}) is not None
    for bad in ({"metadata": {"user_id": "plain-user"}}, {"metadata": {"user_id": "{not json"}},
                {"metadata": {"user_id": "[1]"}}, {"metadata": "x"}, {"prompt_cache_key": ""},
                {"prompt_cache_key": "k" * 300}, {"prompt_cache_key": 7}):
        assert body_key(bad) is None, bad


def test_keys_keep_no_client_text():
    key = header_key({"x-claude-code-session-id": "secret-looking-session"})
    assert "secret" not in key.digest and len(key.digest) == 32


def test_the_hash_is_the_system_prompt_and_first_ask_without_what_changes_per_request():
    def turn(billing: str, reminder: str, later: list) -> list[dict]:
        return [{"role": "system", "content": f"x-anthropic-billing-header: cc_version={billing};\nYou are an agent."},
                {"role": "user", "content": f"<system-reminder>{reminder}</system-reminder>\nFix the bug"}] + later

    first = conversation_hash(turn("a1", "today is Monday", []))
    later = conversation_hash(turn("b2", "today is Tuesday", [{"role": "assistant", "content": "done"},
                                                              {"role": "user", "content": "thanks"}]))
    assert first == later and first.source == "hash"
    other = conversation_hash([{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "hi"}])
    assert other != first
    assert conversation_hash([{"role": "system", "content": "x"}]) is None


# ---- the session map --------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(name: str) -> Key:
    return Key(name, "header")


def test_a_conversation_is_forgotten_after_its_idle_ttl():
    clock = Clock()
    sessions = Sessions(10, idle_ttl_s=60, clock=clock)
    sessions.remember(key("a"), QWEN)
    clock.now += 59
    assert sessions.model(key("a")) == QWEN and len(sessions) == 1
    clock.now += 2  # reading is not activity: the TTL runs from the last answered turn
    assert sessions.model(key("a")) is None and len(sessions) == 0
    assert sessions.model(None) is None


def test_an_answered_turn_refreshes_and_moves_the_conversation():
    clock = Clock()
    sessions = Sessions(10, idle_ttl_s=60, clock=clock)
    sessions.remember(key("a"), QWEN)
    clock.now += 50
    sessions.remember(key("a"), GPTOSS)  # it failed over: the conversation lives on the new model now
    clock.now += 50
    assert sessions.model(key("a")) == GPTOSS


def test_the_map_is_bounded_least_recently_answered_first_out():
    sessions = Sessions(2, idle_ttl_s=60, clock=Clock())
    for name in ("a", "b", "c"):
        sessions.remember(key(name), QWEN)
    assert len(sessions) == 2 and sessions.model(key("a")) is None and sessions.model(key("c")) == QWEN


# ---- the decision -----------------------------------------------------------------------------------------
def meta(**router):
    return normalize_meta(router, CFG)


def test_the_conversations_model_is_kept_over_the_tasks_own():
    d = decide(meta(), "simple_chat", "light", TABLE, FREE, sticky=GPTOSS)
    assert d.model == GPTOSS and d.sticky and "the conversation's model" in d.reason
    assert decide(meta(), "simple_chat", "light", TABLE, FREE).model == VIBE


@pytest.mark.parametrize("state", [ModelState(cooldown=True), ModelState(running=1, loaded=True)],
                         ids=["cooldown", "exclusive-and-busy"])
def test_a_conversation_moves_when_its_model_cannot_take_the_turn(state):
    view = RuntimeView(19000, 0, {GPTOSS: state})
    d = decide(meta(allowAsync=False), "code_generate", "medium", TABLE, view, sticky=GPTOSS)
    assert d.model == QWEN and not d.sticky and f"model {GPTOSS} cannot take it now" in d.reason


def test_a_model_too_small_for_the_conversation_now_is_left():
    d = decide(meta(), "code_review", "medium", TABLE, FREE, sticky=VIBE, context_tokens=9000)
    assert d.model == DEEPSEEK and not d.sticky


def test_a_pin_beats_the_conversation():
    d = decide(meta(), "simple_chat", "light", TABLE, FREE, pinned=DEEPSEEK, sticky=GPTOSS)
    assert d.model == DEEPSEEK and not d.sticky


def test_router_sticky_must_be_a_boolean_and_defaults_from_the_config():
    assert meta().sticky and not meta(sticky=False).sticky
    assert not normalize_meta(None, make_config({"router": {"sticky": {"enabled": False}}})).sticky
    with pytest.raises(Exception, match="router.sticky must be a boolean"):
        meta(sticky="no")


# ---- through the doors, with the real clients' captured requests -----------------------------------------
def conversation(client: str) -> list:
    """Claude Code's or Codex's captured conversation: plan a migration, a tool result, then a new ask
    ("summarize that plan in three bullets") that on its own would go to another model."""
    return [c for c in load_cases(AGENTS / f"{client}.jsonl") if "plan-migration" in c.id]


def send_messages(stack, case, headers: dict | None = None):
    """Streamed, as Claude Code sends it."""
    body = case.body
    fields = {k: v for k, v in body.items() if k not in ("model", "max_tokens", "messages", "stream")}
    c = anthropic.Anthropic(base_url=stack.url, api_key="sk-none", max_retries=0)
    with c.messages.stream(model=body["model"], max_tokens=body["max_tokens"], messages=body["messages"],
                           extra_body=fields, extra_headers=case.headers if headers is None else headers) as events:
        return events.response.headers, events.get_final_message().model


def send_responses(stack, case, headers: dict | None = None):
    body = dict(case.body, stream=False)
    fields = {k: v for k, v in body.items() if k not in ("model", "input")}
    raw = stack.openai().responses.with_raw_response.create(
        model=body["model"], input=body["input"], extra_body=fields,
        extra_headers=case.headers if headers is None else headers)
    return raw.headers, raw.parse().model


@pytest.mark.parametrize("client, send", [("claude_code", send_messages), ("codex", send_responses)])
def test_every_later_turn_stays_on_the_first_turns_model(stack, client, send):
    turns = conversation(client)
    assert [c.turn for c in turns] == ["ask", "loop", "ask", "loop"]
    first_headers, first_model = send(stack, turns[0])
    assert first_model == GPTOSS and "x-router-sticky" not in first_headers  # a plan: the reasoning model
    for case in turns[1:]:
        headers, model = send(stack, case)
        assert model == first_model and headers["x-router-sticky"] == "true", case.id
    # The summary alone (no conversation) goes to the smallest model that holds the agent's prompt.
    _, alone = send(stack, turns[2], headers={"x-claude-code-session-id": "another"} if client == "claude_code"
                    else {"session-id": "another"})
    assert alone != first_model
    status = stack.request("GET", "/v1/router/status").json()
    assert status["stickyConversations"] == 2
    assert "oar_sticky_conversations 2" in stack.request("GET", "/metrics").body.decode()


def test_router_sticky_false_routes_the_turn_on_its_own(stack):
    first, *_, summary, _ = conversation("codex")
    assert send_responses(stack, first)[1] == GPTOSS
    body = dict(summary.body, router={"sticky": False})
    headers, model = send_responses(stack, type(summary)(summary.label, body, summary.path, summary.id,
                                                         summary.headers, summary.turn))
    assert model != GPTOSS and "x-router-sticky" not in headers


def test_explain_says_whether_the_conversation_stays(stack):
    first, _, summary, _ = conversation("claude_code")
    before = stack.request("POST", "/v1/router/route", summary.body, headers=summary.headers).json()
    assert before["sticky"] == {"conversation": "header", "kept": False,
                                "explanation": "a new conversation: the model this turn runs on becomes its own"}
    send_messages(stack, first)
    after = stack.request("POST", "/v1/router/route", summary.body, headers=summary.headers).json()
    assert after["selectedModel"] == GPTOSS and after["agentRequest"]
    assert after["sticky"] == {"conversation": "header", "kept": True, "model": GPTOSS,
                               "explanation": f"the conversation stays on {GPTOSS}"}
