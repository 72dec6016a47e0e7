"""POST /v1/router/route: the decision with every score part, without running anything; and router.explain."""

from __future__ import annotations

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, assert_no_null, chat_body, make_config

from ollama_agent_router.api.explain import blocked_reason
from ollama_agent_router.routing import Candidate, ModelState
from ollama_agent_router.waiting import acquire

COMPONENTS = {"base", "routePosition", "priority", "purpose", "tag", "preferred", "loaded", "complexity", "vram",
              "queue", "running", "exclusive"}


def generation_calls(stack) -> int:
    return len([c for c in stack.sim.calls if c["path"] not in ("/api/ps", "/api/version", "/api/tags")])


def explain(stack, body) -> dict:
    r = stack.request("POST", "/v1/router/route", body)
    assert r.status == 200, r
    out = r.json()
    assert_no_null(out)
    return out


def test_dry_run_shows_classification_and_every_score_part(stack):
    before = generation_calls(stack)
    out = explain(stack, chat_body("Review this TypeScript code ```const x = 1```"))
    assert generation_calls(stack) == before  # nothing ran
    assert out["taskType"] == "code_review" and out["explicitTaskType"] is False
    assert out["complexity"] in ("light", "medium", "heavy") and 0 <= out["confidence"] <= 1
    assert out["markers"] and all(isinstance(m, str) for m in out["markers"])
    assert out["mode"] == "sync" and out["selectedModel"] == DEEPSEEK == out["candidates"][0]["name"]
    assert out["reason"].startswith(f"Selected {DEEPSEEK} for code_review with score ")
    assert "gpuFreeMb" in out and out["heavyLoad"] is False
    for c in out["candidates"]:
        assert set(c["components"]) == COMPONENTS and "blocked" not in c
        assert c["score"] == pytest.approx(sum(c["components"].values()), abs=0.01)
    deepseek = out["candidates"][0]
    assert deepseek["components"]["routePosition"] == 50 and deepseek["components"]["purpose"] == 25
    assert deepseek["vramRequiredMb"] == round(3.8 * 1024 + 512)  # figures are rounded
    assert all(c["score"] == round(c["score"], 1) for c in out["candidates"])
    # Configured models the request could not get at all are listed, with why.
    assert {m["name"]: m["reason"] for m in out["notCandidates"]} == {
        VIBE: "not in the code_review route, purpose or tags", GPTOSS: "not in the code_review route, purpose or tags"}
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)


def test_blocked_candidates_carry_their_reason(stack):
    slot = stack.call(acquire(stack.app.scheduler, GPTOSS))
    try:
        out = explain(stack, chat_body("Plan a multi-step investigation", taskType="agentic_reasoning",
                                       mode="sync"))
    finally:
        stack.run(slot.release)
    blocked = [c for c in out["candidates"] if "blocked" in c]
    assert [(c["name"], c["blocked"]) for c in blocked] == [(GPTOSS, "busy")]
    assert blocked[0]["blockedReason"] == "busy: exclusive, and running 1 request"
    assert blocked[0]["running"] == 1 and blocked[0]["components"]["exclusive"] == -80
    assert out["explicitTaskType"] is True and out["selectedModel"] == QWEN


def test_pinned_and_rejected_dry_runs(stack):
    pinned = explain(stack, {"model": QWEN, "messages": [{"role": "user", "content": "Hello there"}]})
    assert pinned["pinned"] == QWEN and pinned["selectedModel"] == QWEN
    everything = [VIBE, QWEN, DEEPSEEK, GPTOSS]
    rejected = explain(stack, chat_body("Hello there", forbiddenModels=everything))
    assert rejected["mode"] == "reject" and "selectedModel" not in rejected and rejected["candidates"] == []


def test_invalid_dry_runs_are_400(stack):
    assert stack.request("POST", "/v1/router/route", {"messages": []}).status == 400
    assert stack.request("POST", "/v1/router/route", chat_body("x", mode="later")).status == 400


def test_real_replies_list_candidates_when_asked(stack):
    client = stack.openai()
    reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                           extra_body={"router": {"explain": True}})
    candidates = reply.model_extra["router"]["candidates"]
    assert candidates[0]["name"] == VIBE and all(set(c) >= {"name", "score"} for c in candidates)
    plain = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    assert "candidates" not in plain.model_extra["router"]


def test_blocked_reasons_say_what_to_act_on():
    spec = make_config().models[3]  # gpt-oss: exclusive, 14 GB
    need = 14 * 1024 + 512.0
    assert blocked_reason(Candidate(GPTOSS, blocked="gpu_only"), ModelState(), spec, need, 7122.4) == (
        "gpu_only: needs 14,848 MB, 7,122 MB free")
    assert blocked_reason(Candidate(GPTOSS, blocked="gpu_only"), ModelState(loaded=True, processor="48%/52% cpu/gpu"),
                          spec, need, 30000) == "gpu_only: loaded partly on the CPU (48%/52% cpu/gpu)"
    assert blocked_reason(Candidate(GPTOSS, blocked="gpu_only"), ModelState(), spec, need, None).startswith(
        "gpu_only: no GPU reading")
    qwen = make_config().models[1]
    assert blocked_reason(Candidate(QWEN, blocked="busy"), ModelState(running=1), qwen, 1, 1) == (
        "busy: 1 of 1 slots in use, and allowWhenBusy is off")


def test_forbidden_models_are_listed_as_such(stack):
    out = explain(stack, chat_body("Plan a migration", taskType="agentic_reasoning", forbiddenModels=[QWEN]))
    assert {"name": QWEN, "reason": "forbidden by router.forbiddenModels"} in out["notCandidates"]


def test_messages_and_responses_bodies_are_explained_like_their_doors(stack):
    code = "Write a Python function that reverses a string"
    chat = explain(stack, chat_body(code))
    messages = explain(stack, {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": [{"type": "text", "text": "x"}],
                               "messages": [{"role": "user", "content": [{"type": "text", "text": code}]}]})
    responses = explain(stack, {"model": "gpt-5-codex", "instructions": "x",
                                "input": [{"role": "user", "content": [{"type": "input_text", "text": code}]}]})
    assert (chat["api"], messages["api"], responses["api"]) == ("openai", "anthropic", "responses")  # the door
    assert chat["taskType"] == messages["taskType"] == responses["taskType"] == "code_generate"
    assert chat["selectedModel"] == messages["selectedModel"] == responses["selectedModel"] == QWEN
    tool_result = {"model": "auto", "max_tokens": 64, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": "P"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}]}
    out = explain(stack, tool_result)
    assert out["api"] == "anthropic" and out["taskType"] == "tool_use" and out["requiresToolUse"] is True
    bad = stack.request("POST", "/v1/router/route", {"input": "x", "previous_response_id": "resp_1"})
    assert bad.status == 400 and bad.json()["error"]["code"] == "stateless_api"
