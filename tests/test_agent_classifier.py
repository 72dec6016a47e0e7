"""Agent traffic is classified by what the user asked, not by the harness: real Claude Code and Codex CLI requests
(tests/data/agents/, captured by bench/clients/agents.sh) and the rules of docs/classifier.md, "Agent requests"."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from ollama_agent_router.classifier import classify
from ollama_agent_router.classifier_eval import evaluate, format_report, load_cases, request_args

AGENTS = Path(__file__).resolve().parent / "data" / "agents"
CLIENTS = ("claude_code", "codex")
TOOLS = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(9)]


def cases(name: str):
    return load_cases(AGENTS / f"{name}.jsonl")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("split, bar", [("", 0.95), ("_holdout", 0.9)])
def test_captured_agent_requests_are_classified_by_the_users_ask(client, split, bar):
    report = evaluate(cases(client + split))
    assert report.accuracy >= bar, format_report(report)
    assert report.asks_correct / report.asks >= bar - 0.1, format_report(report)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_set_is_real_agent_traffic_across_the_task_types(client):
    dev, holdout = cases(client), cases(client + "_holdout")
    conversations = {c.id.split("/")[0] for c in dev + holdout}
    assert len(conversations) >= 50
    asks = Counter(c.label for c in dev + holdout if c.turn == "ask")
    assert set(asks) >= {"code_fix", "code_generate", "code_review", "summarize", "simple_chat", "agentic_reasoning",
                         "tool_use", "triage"}
    assert sum(c.turn == "loop" for c in dev) >= 20  # conversations with tool results in them
    tools = 20 if client == "claude_code" else 9
    for case in dev + holdout:
        conversation, tools_sent = request_args(case.body, case.path)[:2]
        assert len(tools_sent) >= tools and case.headers  # the harness is kept: it is the point
        assert classify(conversation, tools_sent).harness


def test_a_model_mid_loop_in_a_known_conversation_keeps_working_on_the_ask():
    asks = {}
    for case in cases("claude_code") + cases("codex"):
        conversation_id, conversation = case.id.split("/")[0], request_args(case.body, case.path)
        if case.turn == "ask":
            asks[(case.path, conversation_id)] = classify(*conversation).task_type
            continue
        assert classify(*conversation).task_type == "tool_use"  # not classified before: the model is working
        known = classify(*conversation, continuing=True)
        assert known.task_type == asks[(case.path, conversation_id)], case.id


def agent_request(ask: str) -> list[dict]:
    return [{"role": "system", "content": "You are a coding agent. " * 100}, {"role": "user", "content": ask}]


@pytest.mark.parametrize("ask, expected", [
    ("Summarise the README", "summarize"),  # tools on offer are not tool_use
    ("hi", "simple_chat"),
    ("Run the tests", "tool_use"),
    ("please run pytest and show me what fails", "tool_use"),
    ("Search the codebase for uses of getattr", "tool_use"),
    ("find where the config is parsed", "tool_use"),
    ("Write a script that runs the tests", "code_generate"),  # another intent first: the tools serve it
    ("Fix the bug in calc.py: add() returns a-b", "code_fix"),
])
def test_in_a_harness_only_an_ask_for_the_tools_is_tool_use(ask, expected):
    result = classify(agent_request(ask), TOOLS)
    assert result.task_type == expected and result.harness and "harness" in result.signals


def test_without_a_harness_tools_still_mean_tool_use():
    result = classify([{"role": "user", "content": "Summarise the README"}], TOOLS[:2])
    assert result.task_type == "tool_use" and not result.harness


# ---- routed with the bundled gex44 profile (bench/agent_routing.py) ---------------------------------------
@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("agent_routing", AGENTS.parent.parent.parent / "bench" / "agent_routing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_realistic_agent_mix_spreads_over_the_models(bench):
    models = sum(bench.mix(bench.runner_for()).values(), Counter())
    assert len(models) >= 3, models
    assert models["gpt-oss:20b"] / sum(models.values()) < 0.3, models  # the exclusive model is not the default


def test_every_later_turn_of_every_captured_conversation_stays_on_its_first_model(bench):
    conversations, later, kept = bench.stickiness(bench.runner_for())
    assert conversations >= 80 and later >= 100 and kept == later
