"""Prometheus exposition: the pure renderer with plain data, then /metrics over HTTP against the simulator."""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import string
import subprocess
import time

import pytest
from access_support import access, api_key, secret
from conftest import GPTOSS, QWEN, TEST_CONFIG, VIBE, make_config, wait_for

from ollama_agent_router.metrics import Counter, Histogram, Metrics, gauge, generation_rate
from ollama_agent_router.simulator.run import Fault

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)")


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A strict reader for format 0.0.4: every sample belongs to a family announced by HELP and TYPE."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples = []
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert NAME.fullmatch(name) and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in types and kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
        else:
            m = SAMPLE.fullmatch(line)
            assert m, line
            name, labels_text, value = m.groups()
            labels = dict(LABEL.findall(labels_text or ""))
            if labels_text:
                assert labels_text == "{" + ",".join(f'{k}="{v}"' for k, v in LABEL.findall(labels_text)) + "}", line
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert types.get(family) is not None, f"no TYPE for {name}"
            if types[family] == "histogram":
                assert name != family, line
            samples.append((name, labels, float(value)))
    return types, samples


# ---- pure parts ---------------------------------------------------------------------------------------

def test_counter_and_histogram_render_with_escaping():
    c = Counter("x_total", "X.", ("model",))
    c.inc('a"b\\c\nd')
    c.inc('a"b\\c\nd', amount=2)
    assert list(c.render()) == ["# HELP x_total X.", "# TYPE x_total counter", 'x_total{model="a\\"b\\\\c\\nd"} 3']
    h = Histogram("d_seconds", "D.", ("model",), (0.1, 1))
    for v in (0.05, 0.1, 0.5, 7):
        h.observe(v, "m")
    assert "\n".join(h.render()).split("\n")[2:] == [
        'd_seconds_bucket{model="m",le="0.1"} 2', 'd_seconds_bucket{model="m",le="1"} 3',
        'd_seconds_bucket{model="m",le="+Inf"} 4', 'd_seconds_sum{model="m"} 7.65', 'd_seconds_count{model="m"} 4',
    ]
    h.observe(0.5, "m")  # a changed series renders again
    assert '_count{model="m"} 5' in "\n".join(h.render())
    odd = Histogram("b", "B.", ("model",), (1,))
    odd.observe(2, "{x}%s")
    assert 'b_count{model="{x}%s"} 1' in "\n".join(odd.render())
    assert list(gauge("g", "G.", [({}, 1.5), ({"a": "b"}, 2.0)]))[2:] == ["g 1.5", 'g{a="b"} 2']


def test_labels_fold_to_configured_values():
    m = Metrics(["m1"], ["code_fix"])
    m.observe_request("standalone", "made_up", "gpt-4o", "sync", 200, 0.1, api="openai")
    m.observe_request("standalone", None, None, "reject", 503, 0.0, api="anthropic")
    assert set(m.requests.values) == {("standalone", "other", "other", "sync", "200", "openai"),
                                      ("standalone", "none", "none", "reject", "503", "anthropic")}


@pytest.mark.parametrize("usage,seconds,first_byte,chunks,expected", [
    ({"eval_count": 50, "eval_duration": 500_000_000}, 9.0, None, 0, 100.0),  # native: exact
    ({"completion_tokens": 20}, 3.0, 1.0, 0, 10.0),  # OpenAI usage, timed from the first byte
    ({"completion_tokens": 20}, 2.0, None, 0, 10.0),
    (None, 2.0, 1.0, 11, 11.0),  # a stream without usage: chunks stand in for tokens
    (None, 2.0, None, 0, None),
    ({"completion_tokens": 0}, 1.0, None, 0, None),
])
def test_generation_rate(usage, seconds, first_byte, chunks, expected):
    assert generation_rate(usage, seconds, first_byte, chunks) == expected


# ---- over HTTP ----------------------------------------------------------------------------------------

def scrape(stack) -> str:
    r = stack.request("GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return r.body.decode()


def value(samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def test_exposition_is_valid_and_keeps_the_original_gauges_in_order(stack):
    client = stack.openai()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    text = scrape(stack)
    types, samples = parse_exposition(text)
    for name, kind in types.items():
        assert name.startswith("oar_")
        assert name.endswith("_total") == (kind == "counter") or name == "oar_jobs_total", name
    original = ["oar_queue_global_queued", "oar_queue_global_running", "oar_ollama_reachable", "oar_gpu_vram_free_mb",
                "oar_gpu_utilization_pct", "oar_jobs_total", "oar_model_queue_depth", "oar_model_running"]
    first_seen = list(dict.fromkeys(n for n, _, _ in samples))
    assert [n for n in first_seen if n in original] == original
    assert [ls["status"] for n, ls, _ in samples if n == "oar_jobs_total"] == [
        "queued", "running", "succeeded", "failed", "cancelled", "expired"]
    configured = [m["name"] for m in TEST_CONFIG["models"]]
    assert [ls["model"] for n, ls, _ in samples if n == "oar_model_running"] == configured
    assert value(samples, "oar_ollama_reachable") == 1


def test_job_gauge_has_the_originals_per_model_series(stack):
    for model, task in ((QWEN, "code_generate"), (VIBE, "simple_chat"), (QWEN, "code_fix")):
        stack.run(lambda m=model, t=task: stack.app.jobs.submit({"messages": [{"role": "user", "content": "x"}]},
                                                                 m, t, "normal", None))
    wait_for(lambda: stack.run(lambda: stack.app.jobs.summary()["succeededRetained"]) == 3)
    _, samples = parse_exposition(scrape(stack))
    jobs = [(ls, v) for n, ls, v in samples if n == "oar_jobs_total"]
    assert [ls["status"] for ls, _ in jobs[:6]] == ["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    # Then one series per (status, model), newest job's pair first, as the TypeScript router exposes them.
    assert jobs[6:] == [({"status": "succeeded", "model": QWEN}, 2.0), ({"status": "succeeded", "model": VIBE}, 1.0)]


def test_counters_and_histograms_follow_traffic(stack_factory):
    stack = stack_factory({"router": {"failover": {"cooldownFailures": 1, "cooldownMs": 60000}}})
    client = stack.openai()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                        stream=True, stream_options={"include_usage": True}))
    stack.sim.inject(QWEN, Fault(status=500))
    client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "Hello there"}])
    execute = {"selectedModel": GPTOSS, "request": {"messages": [{"role": "user", "content": "x"}]},
               "routerDecision": {"taskType": "agentic_reasoning"}}
    assert stack.request("POST", "/v1/router/execute", execute).status == 200
    assert stack.request("POST", "/v1/router/execute", dict(execute, selectedModel="nope")).status == 404
    _, samples = parse_exposition(scrape(stack))
    req = "oar_requests_total"
    assert value(samples, req, plane="standalone", task_type="simple_chat", model=VIBE, mode="sync", status="200") == 2
    assert value(samples, req, plane="standalone", model=VIBE, mode="stream", status="200") == 1
    assert value(samples, req, plane="runtimeAgent", task_type="agentic_reasoning", model=GPTOSS, status="200") == 1
    assert value(samples, req, plane="runtimeAgent", model="none", status="404") == 1
    assert value(samples, "oar_failovers_total", from_model=QWEN, to_model=VIBE) == 1
    assert value(samples, "oar_model_cooldowns_total", model=QWEN) == 1
    assert value(samples, "oar_upstream_errors_total", model=QWEN, kind="http_500") == 1
    assert value(samples, "oar_request_duration_seconds_count", model=VIBE) == 3
    assert value(samples, "oar_time_to_first_token_seconds_count", model=VIBE) == 1
    assert value(samples, "oar_tokens_per_second_count", model=VIBE) == 3
    assert value(samples, "oar_queue_wait_seconds_count") == 4  # the failed attempt on QWEN ran no model
    assert value(samples, "oar_routing_decision_seconds_count") == 3
    for family in ("oar_auth_denials_total", "oar_rate_limited_total", "oar_jobs_finished_total",
                   "oar_model_loads_avoided_total"):
        assert f"# TYPE {family} counter" in scrape(stack)


async def _send_all(port: int, requests: list[tuple[str, bytes]], concurrency: int) -> list[int]:
    """Keep-alive HTTP/1.1 clients on the stack's own loop (no cross-thread handoff per request)."""
    statuses: list[int] = []
    todo = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path, body in todo:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            statuses.append(int(head.split(b" ", 2)[1]))
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_label_values_stay_bounded_under_random_client_strings(stack_factory):
    stack = stack_factory({"router": {"heavyLoadQueueDepth": 100000},
                           "queue": {"globalMaxQueued": 100000, "perUserMaxQueued": 100000}})
    rng = random.Random(5)
    sent: set[str] = set()

    def junk() -> str:
        s = "".join(rng.choices(string.ascii_letters + string.digits + "_:-", k=12))
        sent.add(s)
        return s

    requests = []
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            body = {"model": junk(), "messages": [{"role": "user", "content": "hi"}], "router": {"taskType": junk()}}
            requests.append(("/v1/chat/completions", body))
        elif kind == 1:
            requests.append(("/api/generate", {"model": junk(), "prompt": "hi", "stream": False,
                                               "router": {"taskType": junk()}}))
        else:
            body = {"selectedModel": junk(), "request": {"messages": [{"role": "user", "content": "x"}]},
                    "routerDecision": {"taskType": junk()}, "classification": {"taskType": junk()}}
            requests.append(("/v1/router/execute" if kind == 2 else "/v1/router/jobs", body))
    encoded = [(p, json.dumps(b).encode()) for p, b in requests]
    statuses = stack.call(_send_all(stack.port, encoded, 8), timeout=120)
    assert sorted(set(statuses)) == [200, 404]
    text = scrape(stack)
    _, samples = parse_exposition(text)
    assert not any(s in text for s in sent)
    allowed = {
        "model": set(stack.app.table.order) | {"other", "none"},
        "task_type": set(stack.app.metrics.task_types) | {"other", "none"},
        "plane": {"standalone", "runtimeAgent", "admin", "metrics"},
    }
    for _, labels, _ in samples:
        for key, values in allowed.items():
            assert key not in labels or labels[key] in values, labels
    metrics = stack.app.metrics
    series = sum(len(f.values) if isinstance(f, Counter) else len(f.series) for f in metrics.families)
    assert series < 40 and len(samples) < 700


def test_a_scrape_never_waits_on_ollama_nor_spawns_a_process(stack, monkeypatch):
    stack.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    for path in ("/api/ps", "/api/tags", "/api/version"):
        stack.sim.inject(path, Fault(first_byte_delay_s=30, times=None))
    spawned: list = []

    def refuse(*args, **kw):
        spawned.append(args)
        raise OSError("no process may be spawned here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse)
    tags_before = len([c for c in stack.sim.calls if c["path"] == "/api/tags"])
    try:
        for _ in range(5):
            t0 = time.perf_counter()
            text = scrape(stack)
            assert time.perf_counter() - t0 < 0.25
            assert "oar_snapshot_age_seconds" in text
    finally:
        stack.sim.clear_faults()
    assert spawned == []
    assert len([c for c in stack.sim.calls if c["path"] == "/api/tags"]) == tags_before


def test_metrics_bind_moves_the_exposition_to_its_own_listener():
    from ollama_agent_router.app import App
    from ollama_agent_router.log import Logger

    async def fetch(port: int, path: str, key: str = "") -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        auth = f"x-api-key: {key}\r\n" if key else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]

    async def main() -> None:
        cfg = make_config({"metrics": {"bind": "127.0.0.1:9464", "requireApiKey": True},
                           "ollama": {"baseUrl": "http://127.0.0.1:9"},
                           **access(keys=[api_key("rt", ["runtimeAgent"]), api_key("std", ["standalone"])])})
        app = App(cfg, log=Logger("error", io.StringIO()))
        port = await app.start("127.0.0.1", 0, metrics_port=0)
        try:
            assert app.metrics_port not in (None, port)
            assert (await fetch(port, "/metrics"))[0] == 404
            assert (await fetch(port, "/health"))[0] == 200
            assert (await fetch(app.metrics_port, "/metrics"))[0] == 401  # metrics.requireApiKey holds here too
            assert (await fetch(app.metrics_port, "/metrics", secret("std")))[0] == 403
            status, body = await fetch(app.metrics_port, "/metrics", secret("rt"))
            assert status == 200 and b"# TYPE oar_requests_total counter" in body
            assert (await fetch(app.metrics_port, "/health"))[0] == 404
            assert (await fetch(app.metrics_port, "/v1/router/runtime"))[0] == 404
        finally:
            await app.stop(1.0)

    asyncio.run(main())


def test_every_door_counts_under_its_own_api_label(stack):
    hello = [{"role": "user", "content": "Hello there"}]
    stack.openai().chat.completions.create(model="auto", messages=hello)
    assert stack.request("POST", "/api/chat", {"model": "auto", "messages": hello, "stream": False}).status == 200
    assert stack.request("POST", "/v1/messages", {"model": "x", "max_tokens": 8, "messages": hello}).status == 200
    assert stack.request("POST", "/v1/messages", {"model": "x", "messages": hello}).status == 400
    assert stack.request("POST", "/v1/responses", {"model": "x", "input": "Hello there", "stream": True}).status == 200
    _, samples = parse_exposition(scrape(stack))
    req = "oar_requests_total"
    for api, mode in (("openai", "sync"), ("ollama", "sync"), ("anthropic", "sync"), ("responses", "stream")):
        assert value(samples, req, api=api, model=VIBE, mode=mode, status="200") == 1, api
    assert value(samples, req, api="anthropic", model="none", status="400") == 1
    assert value(samples, "oar_tokens_per_second_count", model=VIBE) == 4  # usage read in every door's reply
