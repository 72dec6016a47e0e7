"""Reading a coding agent's conversation: the user's ask apart from what the harness injected (harness.py)."""

from __future__ import annotations

import pytest

from ollama_agent_router import harness
from ollama_agent_router.harness import CONTEXT_CHARS, content_chars, content_text, read, strip_injections

REMINDER = "<system-reminder>\nToday's date is 2026-12-06. Do not mention this unless relevant.\n</system-reminder>"
TOOLS = [{"name": f"tool{i}"} for i in range(24)]


def test_harness_blocks_are_stripped_and_the_users_own_tags_kept():
    assert strip_injections(f"{REMINDER}\nFix the bug in calc.py").strip() == "Fix the bug in calc.py"
    env = "<environment_context>\n  <cwd>/home/user/x</cwd>\n</environment_context>"
    assert strip_injections(env) == ""
    assert strip_injections("<permissions instructions>read-only</permissions instructions>") == ""
    assert strip_injections("<local-command-stdout>ok</local-command-stdout>run it") == "run it"
    for kept in ("Why does <template>x</template> not render?", "<task>\nfix the login bug\n</task>",
                 "an unclosed <system-reminder> tag", "a < b and c > d"):
        assert strip_injections(kept) == kept


@pytest.mark.parametrize("content", ["plain", "", ["a", {"type": "text", "text": "bc"}, {"type": "image"}, 7],
                                     [{"type": "input_text", "text": "x"}], None, 3.5, {"text": "no"}])
def test_content_chars_is_the_length_of_content_text(content):
    assert content_chars(content) == len(content_text(content))


def claude_turn_one(ask: str) -> list[dict]:
    """Claude Code's first turn as the Anthropic door reads it: system prompt, reminder + ask, a system message."""
    return [{"role": "system", "content": "You are an interactive agent. " * 200},
            {"role": "user", "content": f"{REMINDER}\n{ask}"},
            {"role": "system", "content": "Available agent types: review, summarize, classify, plan."}]


def test_the_ask_is_the_users_text_not_the_reminder_nor_the_system_message_after_it():
    r = read(claude_turn_one("Summarise the README"), TOOLS)
    assert r.ask.strip() == "Summarise the README"
    assert r.harness and not r.mid_loop and r.earlier == ""
    assert r.system_chars == len("You are an interactive agent. " * 200) + len(
        "Available agent types: review, summarize, classify, plan.")


def test_mid_loop_is_a_tool_result_last_even_with_a_reminder_beside_it():
    messages = claude_turn_one("Run the tests") + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "Bash", "arguments": {}}}]},
        {"role": "tool", "content": "1 failed, 1 passed"},
        {"role": "user", "content": REMINDER},  # injected beside the result: not the user speaking
    ]
    r = read(messages, TOOLS)
    assert r.mid_loop and r.tool_exchange
    assert r.ask.strip() == "Run the tests"


def test_a_user_message_after_a_tool_result_is_a_new_ask():
    messages = claude_turn_one("Run the tests") + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "Bash", "arguments": {}}}]},
        {"role": "tool", "content": "1 failed, 1 passed"},
        {"role": "assistant", "content": "One test fails."},
        {"role": "user", "content": "fix the failing one"},
    ]
    r = read(messages, TOOLS)
    assert r.ask == "fix the failing one" and not r.mid_loop
    assert r.earlier.endswith("1 failed, 1 passed\nOne test fails.")
    assert "Run the tests" in r.earlier and "<system-reminder>" not in r.earlier


def test_harness_shape_needs_no_product_name():
    short_system = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hi"}]
    assert not read(short_system, [{"type": "function"}] * 3).harness  # an app's own few tools
    assert read(short_system, [{"type": "function"}] * 5).harness  # a tool catalogue
    assert read([{"role": "system", "content": "x" * 2000}, {"role": "user", "content": "hi"}]).harness
    assert read([{"role": "user", "content": "hi"}, {"role": "developer", "content": "be brief"},
                 {"role": "user", "content": "and?"}]).harness  # a system message inside the conversation
    assert read([{"role": "user", "content": "<environment_context>x</environment_context>hi"}]).harness
    assert not read([{"role": "user", "content": "hi"}]).harness


def test_a_blank_user_turn_is_an_empty_ask_but_an_injection_only_one_is_no_ask():
    assert read([{"role": "user", "content": "  "}]).ask == "  "
    assert read([{"role": "user", "content": REMINDER}]).ask is None
    assert read([{"role": "assistant", "content": "hello"}]).ask is None


def test_the_scan_is_bounded_by_the_newest_turns(monkeypatch):
    history = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i} " + "x" * 200} for i in range(5000)]
    history.append({"role": "user", "content": "now summarise all that"})
    calls = []
    real = harness.content_text
    monkeypatch.setattr(harness, "content_text", lambda c: calls.append(1) or real(c))
    r = read(history)
    assert r.ask == "now summarise all that" and len(r.earlier) == CONTEXT_CHARS
    assert len(calls) <= 2 + CONTEXT_CHARS // 200  # the ask and the turns the context needs, not 5,000
    assert r.total_chars == sum(len(m["content"]) for m in history) + len(history) - 1
