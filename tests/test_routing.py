"""The routing engine as a pure function: candidates, blocks, the score table of spec §5.5, the mode order."""

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, config_with, make_config

from ollama_agent_router.errors import HttpError
from ollama_agent_router.options import normalize_meta
from ollama_agent_router.routing import ModelState, RoutingTable, RuntimeView, decide, score_text

CFG = make_config()
TABLE = RoutingTable(CFG)
FREE = RuntimeView(gpu_free_mb=19000, total_waiting=0)


def meta(**kw):
    return normalize_meta(kw, CFG)


def scores(task, complexity, view=FREE, **kw):
    d = decide(meta(**kw), task, complexity, TABLE, view, explain=True)
    return d, {c.name: c.score for c in d.ranked}


@pytest.mark.parametrize(
    "task,complexity,expected",
    [
        ("simple_chat", "light", {VIBE: 265, QWEN: 237}),
        ("code_generate", "medium", {QWEN: 270, DEEPSEEK: 260}),
        ("code_review", "medium", {DEEPSEEK: 268, QWEN: 237}),
        ("agentic_reasoning", "heavy", {GPTOSS: 298.109375, QWEN: 262}),
        ("tool_use", "medium", {GPTOSS: 270.109375, QWEN: 270}),
    ],
)
def test_score_table_row_by_row(task, complexity, expected):
    d, got = scores(task, complexity)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value)
    assert d.model == max(expected, key=expected.get)
    assert d.action == "sync"


def test_display_rounding_is_javascript_tofixed():
    d, _ = scores("agentic_reasoning", "heavy")
    assert d.reason == f"Selected {GPTOSS} for agentic_reasoning with score 298.1"
    assert score_text(270.25) == "270.3" and score_text(0.05) == "0.1"


def test_no_route_bonus_outside_the_route_list():
    # The original gave +58 to models outside the route list (index -1); it must be 0.
    d, got = scores("code_generate", "medium", preferredModels=[VIBE])
    parts = dict(next(c for c in d.ranked if c.name == VIBE).components)
    assert parts["routePosition"] == 0
    assert got[VIBE] == pytest.approx(100 + 0 + 50 + 80 + 25)


def test_candidate_order_and_forbidden():
    d = decide(meta(preferredModels=[DEEPSEEK, "nope"], forbiddenModels=[QWEN]), "code_generate", "medium", TABLE, FREE)
    assert d.candidates == (DEEPSEEK,)


def test_unknown_task_falls_back_to_unknown_route():
    d = decide(meta(), "bogus_type", "medium", TABLE, FREE)
    assert d.candidates == (VIBE,)


def test_cached_score_parts_match_a_fresh_table_and_stay_bounded():
    # The table caches each model's config-only score parts per task type and complexity; a client
    # naming thousands of task types must neither grow that cache nor see another type's answer.
    table = RoutingTable(CFG)
    cases = [("code_generate", "medium"), ("bogus_a", "light"), ("bogus_b", "heavy"), ("simple_chat", "light"),
             ("code_generate", "heavy"), ("simple_chat", "weird")] + [(f"t{i}", "light") for i in range(300)]
    for task, complexity in cases:
        got = decide(meta(), task, complexity, table, FREE, explain=True)
        fresh = decide(meta(), task, complexity, RoutingTable(CFG), FREE, explain=True)
        assert (got.candidates, got.ranked, got.reason) == (fresh.candidates, fresh.ranked, fresh.reason)
    assert len(table._fixed) <= 3 * (len(table._named_types) + 1)
    assert len(table._base) <= len(table._named_types) + 1


def make_config_models():
    from conftest import TEST_CONFIG

    return TEST_CONFIG["models"]


@pytest.mark.parametrize("first", [QWEN, DEEPSEEK])
def test_stable_sort_keeps_candidate_order_on_ties(first):
    twins = [dict(m, priority=70, sizeGb=4, purpose=["custom"]) for m in make_config_models() if m["name"] in (QWEN, DEEPSEEK)]
    twins.sort(key=lambda m: m["name"] != first)
    cfg = config_with(models=twins, routes={"unknown": []})
    d = decide(normalize_meta({}, cfg), "custom", "medium", RoutingTable(cfg), FREE)
    assert d.ranked[0].score == d.ranked[1].score
    assert d.model == first


def busy_view(**running):
    return RuntimeView(19000, 0, {name: ModelState(running=n) for name, n in running.items()})


def test_busy_exclusive_model_skipped_when_async_not_allowed():
    d = decide(meta(allowAsync=False), "agentic_reasoning", "heavy", TABLE, busy_view(**{GPTOSS: 1}))
    assert (d.action, d.model) == ("sync", QWEN)


def test_busy_preferred_model_goes_async_on_that_model():
    d = decide(meta(), "agentic_reasoning", "heavy", TABLE, busy_view(**{GPTOSS: 1}))
    assert (d.action, d.model) == ("async", GPTOSS)
    assert d.reason == "Preferred model is busy; accepted for async processing"


def test_gpu_only_reject_with_named_reasons():
    view = RuntimeView(19000, 0, {GPTOSS: ModelState(loaded=True, processor="63%/37% cpu/gpu")})
    d = decide(meta(requireGpuOnly=True, preferredModels=[GPTOSS], forbiddenModels=[QWEN], allowAsync=False),
               "agentic_reasoning", "heavy", TABLE, view)
    assert d.action == "reject" and d.status == 503
    assert d.reason == f"{GPTOSS}: gpu_only"


def test_gpu_only_counts_what_ollama_frees_by_unloading_the_loaded_models():
    # gpt-oss needs 14,848 MB; vibe (3,686 MB) and qwen (4,813 MB) are resident and idle.
    resident = {VIBE: ModelState(loaded=True, processor="100% gpu"), QWEN: ModelState(loaded=True, processor="100% gpu")}
    ask = meta(requireGpuOnly=True, allowAsync=False)
    d = decide(ask, "agentic_reasoning", "heavy", TABLE, RuntimeView(7000, 0, resident), pinned=GPTOSS)
    assert (d.action, d.model) == ("sync", GPTOSS)  # 7,000 free + 8,499 unloadable: it loads fully on the GPU
    assert [c.name for c in d.ranked] == [GPTOSS, QWEN]  # not fitting beside them still costs it its vram score
    d = decide(ask, "agentic_reasoning", "heavy", TABLE, RuntimeView(6000, 0, resident), pinned=GPTOSS)
    assert (d.model, [(c.name, c.blocked) for c in d.blocked]) == (QWEN, [(GPTOSS, "gpu_only")])  # 14,499: too small
    busy = {**resident, QWEN: ModelState(running=1, loaded=True, processor="100% gpu")}
    d = decide(ask, "agentic_reasoning", "heavy", TABLE, RuntimeView(7000, 0, busy), pinned=GPTOSS)
    assert d.model == GPTOSS  # Ollama waits for a busy model to finish, then unloads it
    # Without a GPU reading the configured total is all there is, loaded models or not.
    no_reading = RuntimeView(None, 0, resident)
    assert decide(ask, "agentic_reasoning", "heavy", TABLE, no_reading, pinned=GPTOSS).model == GPTOSS


def test_async_mode_never_picks_a_gpu_only_model():
    # Original bug: mode async used candidates[0] even when gpu_only-blocked.
    view = RuntimeView(19000, 0, {GPTOSS: ModelState(loaded=True, processor="100% cpu")})
    d = decide(meta(mode="async", requireGpuOnly=True, preferredModels=[GPTOSS], forbiddenModels=[QWEN]),
               "agentic_reasoning", "heavy", TABLE, view)
    assert d.action == "reject"


def test_busy_fallback_picks_the_busy_model_not_the_first_blocked():
    # gpu_only-blocked gpt-oss comes first in candidate order; qwen is only busy.
    cfg = make_config({"models": [dict(m, allowWhenBusy=False) if m["name"] == QWEN else m for m in make_config_models()]})
    table = RoutingTable(cfg)
    view = RuntimeView(19000, 0, {GPTOSS: ModelState(loaded=True, processor="100% cpu"), QWEN: ModelState(running=1)})
    d = decide(normalize_meta({"requireGpuOnly": True}, cfg), "agentic_reasoning", "heavy", table, view)
    assert (d.action, d.model) == ("async", QWEN)


def test_heavy_load_goes_async_and_sync_mode_does_not():
    heavy = RuntimeView(19000, 5)
    assert decide(meta(), "code_generate", "medium", TABLE, heavy).action == "async"
    assert decide(meta(mode="sync"), "code_generate", "medium", TABLE, heavy).action == "sync"
    low_vram = RuntimeView(512, 0)
    assert decide(meta(), "code_generate", "medium", TABLE, low_vram).heavy_load


def test_cooldown_blocks_and_is_named():
    view = RuntimeView(19000, 0, {QWEN: ModelState(cooldown=True)})
    d = decide(meta(), "code_generate", "medium", TABLE, view)
    assert d.model == DEEPSEEK and d.blocked[0].blocked == "cooldown"


def test_queue_and_running_penalties():
    view = RuntimeView(19000, 2, {QWEN: ModelState(waiting=2, running=1)})
    _, got = scores("code_generate", "medium", view)
    assert got[QWEN] == pytest.approx(270 - 36 - 25)


def test_pinned_model_wins_when_available():
    d = decide(meta(), "simple_chat", "light", TABLE, FREE, pinned=DEEPSEEK)
    assert d.model == DEEPSEEK and d.candidates[0] == DEEPSEEK


def test_resolve_latest_and_aliases():
    cfg = make_config({"models": [dict(m, aliases=["fast"]) if m["name"] == VIBE else m for m in make_config_models()]})
    table = RoutingTable(cfg)
    assert table.resolve("fast") == VIBE
    assert table.resolve(f"{QWEN}") == QWEN
    assert table.resolve("nothing") is None


@pytest.mark.parametrize(
    "raw",
    [[1], {"mode": "fast"}, {"allowAsync": "yes"}, {"priority": "urgent"}, {"preferredModels": "x"},
     {"maxQueueTimeMs": -1}, {"maxExecutionTimeMs": 0}, {"requireGpuOnly": 1}, {"taskType": 5}],
)
def test_bad_router_options_are_400(raw):
    with pytest.raises(HttpError) as e:
        normalize_meta(raw, CFG)
    assert e.value.status == 400


def test_lenient_meta_for_kong():
    m = normalize_meta({"priority": "urgent", "preferredModels": {}}, CFG, lenient=True)
    assert m.priority == "normal" and m.preferred_models == ()


def test_defaults_from_config():
    m = normalize_meta({}, CFG)
    assert (m.mode, m.allow_async, m.priority, m.max_queue_time_ms) == ("auto", True, "normal", 5000)
    assert m.max_execution_time_ms is None and not m.wait_when_busy  # the model's timeoutMs bounds the run
    plain = normalize_meta(None, CFG)  # no router object: a plain client
    assert (plain.allow_async, plain.wait_when_busy) == (False, True)
    assert normalize_meta(None, CFG, prefer_async=True).allow_async  # Prefer: respond-async opts in
    relaxed = make_config({"router": {"asyncForPlainClients": True}})
    assert normalize_meta(None, relaxed).allow_async and not normalize_meta(None, relaxed).wait_when_busy
