"""The live feed (GET /v1/router/events) against the simulator: what each kind of request puts on it, job
progress, the bound on a slow reader, the access policy, and that no prompt, completion or key ever shows."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable

import ollama
import pytest
from conftest import QWEN, VIBE, Stack, chat_body, make_config, wait_for
from test_cli import cli_env
from test_kong import execute_body

from ollama_agent_router.commands.client import ClientError, Target
from ollama_agent_router.commands.feed import Feed
from ollama_agent_router.commands.serve import dashboard_url
from ollama_agent_router.config.reader import ConfigError
from ollama_agent_router.events import EventHub, JobEvent, RuntimeEvent
from ollama_agent_router.metrics import RecentRequests

SENTINEL = "zebra-sentinel-4242"
KEY = "sk-feed-" + "k3y" * 8
KEY_ID = "owner-sentinel"


class Watch(Feed):
    """The client's own feed reader (what ``oar top`` uses), keeping every byte and event it saw."""

    def __init__(self, stack: Stack, key: str | None = None) -> None:
        self.seen = bytearray()
        self.got: list[tuple[str, Any]] = []
        super().__init__(Target(url=stack.url, api_key=key, timeout=10))
        self.until(lambda: self.of("hello"))

    def _recv(self, timeout: float) -> bytes | None:
        data = super()._recv(timeout)
        if data:
            self.seen += data
        return data

    def of(self, kind: str) -> list[Any]:
        return [data for k, data in self.got if k == kind]

    def until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert time.monotonic() < deadline, f"feed condition not met; got {[k for k, _ in self.got]}"
            self.got += self.events(0.05)
        return value


def secured() -> dict:
    digest = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    return {"access": {"managed": {
        "planes": {p: {"auth": {"requireApiKey": True, "anonymous": "reject"}} for p in ("standalone", "runtimeAgent")},
        "apiKeys": [{"id": KEY_ID, "keyHash": digest, "scopes": ["standalone", "runtimeAgent"]}]}}}


# ---- the hub and the last-minute window, as plain objects --------------------------------------------------

def test_a_full_subscriber_drops_and_counts_and_the_decisions_kept_are_bounded():
    hub = EventHub(limit=3, keep=2)
    sub = hub.subscribe()
    for i in range(10):
        hub.publish(RuntimeEvent({"n": i}))
    assert len(sub.frames) == 3 and sub.dropped == 7
    assert [json.loads(f.split(b"data: ")[1])["n"] for f in sub.take()] == [0, 1, 2]
    assert not sub.frames and hub.seq == 10
    job = JobEvent("job_1", "queued", VIBE, "summarize", "normal", 0, 1.5, None, None)
    hub.publish(job)
    assert sub.take()[0].startswith(b"id: 11\nevent: job\ndata: {") and not hub.decisions
    hub.close()
    assert sub.closed and hub.subscribe() is None


def test_recent_requests_window_counts_the_last_minute_only():
    now = [1000.0]
    recent = RecentRequests(clock=lambda: now[0])
    for latency in (0.010, 0.010, 0.010, 0.100):
        recent.add(200, latency)
    recent.add(429, None)
    recent.add(503, None)
    now[0] += 30
    s = recent.summary()
    assert (s["requests"], s["status429"], s["status503"], s["windowSeconds"]) == (6, 1, 1, 30)
    assert s["perSecond"] == 0.2
    assert 10 <= s["p50Ms"] <= 12.5 and 100 <= s["p95Ms"] <= 125  # bucketed: within 25 % above
    now[0] += 31  # everything above is now older than a minute
    assert recent.summary()["requests"] == 0 and recent.summary()["p50Ms"] is None


# ---- what requests put on the feed -------------------------------------------------------------------------

def test_nothing_is_built_while_nobody_watches(stack):
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    hub = stack.app.events
    assert (hub.seq, len(hub.decisions)) == (0, 0)


def test_decisions_for_sync_stream_native_async_and_kong_requests(stack):
    watch = Watch(stack)
    fix = "Fix this bug in my python code: def f(): return 1/0"
    client = stack.openai()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": fix}])
    list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                        stream=True))
    ollama.Client(host=stack.url).chat(model="auto", messages=[{"role": "user", "content": "Hi, how are you?"}])
    accepted = stack.request("POST", "/v1/chat/completions", chat_body("Summarize this text please", mode="async"))
    assert accepted.status == 202
    assert stack.request("POST", "/v1/router/execute", execute_body(VIBE, "ECHO: OK")).status == 200
    decisions = watch.until(lambda: len(watch.of("decision")) >= 5 and watch.of("decision"))
    sync, stream, native, queued, kong = decisions
    assert {k: sync[k] for k in ("api", "plane", "task", "model", "mode", "status", "explained")} == {
        "api": "openai", "plane": "standalone", "task": "code_fix", "model": QWEN, "mode": "sync", "status": 200,
        "explained": True}
    assert sync["reason"].startswith(f"Selected {QWEN} for code_fix") and sync["durationMs"] > 0
    assert isinstance(sync["queueMs"], int) and abs(sync["at"] / 1000 - time.time()) < 30
    assert (stream["api"], stream["mode"], stream["status"], stream["model"]) == ("openai", "stream", 200, VIBE)
    assert (native["api"], native["mode"], native["status"], native["task"]) == ("ollama", "sync", 200, "simple_chat")
    assert (queued["mode"], queued["status"], queued["reason"]) == ("async", 202, "Request explicitly requested async mode")
    assert (kong["api"], kong["plane"], kong["mode"], kong["explained"]) == ("kong", "runtimeAgent", "sync", False)
    assert [d["seq"] for d in decisions] == sorted(d["seq"] for d in decisions)
    # A model was loaded on the way: the runtime snapshot's change went out too.
    watch.until(lambda: any(m["name"] == QWEN for r in watch.of("runtime") for m in r["loadedModels"]))

    # Clicking a decision: the same content /v1/router/route gives, as it was when the decision was made.
    kept = stack.request("GET", f"/v1/router/decisions/{sync['seq']}").json()
    now = stack.request("POST", "/v1/router/route", chat_body(fix)).json()
    assert set(kept) == set(now)
    for key in ("taskType", "explicitTaskType", "complexity", "confidence", "markers", "tokenEstimate", "mode"):
        assert kept[key] == now[key], key
    assert kept["selectedModel"] == QWEN and {c["name"] for c in kept["candidates"]} == {c["name"] for c in now["candidates"]}
    assert next(c for c in kept["candidates"] if c["name"] == QWEN)["loaded"] is False  # not yet, back then
    gone = stack.request("GET", f"/v1/router/decisions/{kong['seq']}")
    assert gone.status == 404 and gone.json()["error"]["code"] == "explanation_not_kept"
    for bad in ("999999", "abc", "9" * 40):
        assert stack.request("GET", f"/v1/router/decisions/{bad}").json()["error"]["code"] == "decision_not_found"
    # A late reader gets the kept decisions in its hello.
    assert [d["seq"] for d in Watch(stack).of("hello")[0]["decisions"]] == [d["seq"] for d in decisions]


def test_job_states_and_progress(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 20, "reply_tokens": 60})  # a job of about 3 s
    watch = Watch(stack)
    # One short reply measures the model's speed, which the progress estimate is based on.
    short = {**chat_body("Hello there"), "max_tokens": 4}
    assert stack.request("POST", "/v1/chat/completions", short).status == 200
    job_id = stack.request("POST", "/v1/chat/completions", chat_body("Hello again", mode="async")).json()["id"]

    def progress() -> list[dict]:
        return [p for s in watch.of("state") for p in s["jobs"]["progress"] if p["id"] == job_id]

    watch.until(lambda: len(progress()) >= 2)
    first, second = progress()[:2]
    assert first["model"] == VIBE and first["tokensEstimated"] is True
    assert 0 < first["tokens"] < second["tokens"] and first["elapsedMs"] < second["elapsedMs"]
    assert second["tokens"] == pytest.approx(second["elapsedMs"] / 1000 * 20, rel=0.5)  # the sim's 20 tokens/s
    watch.until(lambda: any(j["status"] == "succeeded" for j in watch.of("job")))
    states = [(j["status"], j["attempts"]) for j in watch.of("job") if j["id"] == job_id]
    assert states == [("queued", 0), ("running", 1), ("succeeded", 1)]
    done = [j for j in watch.of("job") if j["id"] == job_id][-1]
    assert done["finishedAt"] >= done["startedAt"] >= done["createdAt"] and (done["model"], done["task"]) == (VIBE, "simple_chat")
    watch.until(lambda: not watch.of("state")[-1]["jobs"]["progress"] and watch.of("state")[-1]["jobs"]["succeededRetained"])


def test_no_prompt_completion_or_key_ever_reaches_the_feed(stack_factory):
    stack = stack_factory(secured(), sim_kw={"reply_tokens": 8})
    assert stack.request("GET", "/v1/router/events").status == 401
    watch = Watch(stack, key=KEY)
    auth = {"authorization": f"Bearer {KEY}"}
    prompt = f"ECHO: {SENTINEL} please fix this bug"  # the simulator echoes it back: the completion holds it too
    client = stack.openai(api_key=KEY)
    reply = client.chat.completions.create(model="auto", messages=[{"role": "system", "content": SENTINEL},
                                                                  {"role": "user", "content": prompt}])
    assert SENTINEL in reply.choices[0].message.content
    list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": prompt}], stream=True))
    job = stack.request("POST", "/v1/chat/completions", chat_body(prompt, mode="async"), headers=auth).json()["id"]
    bad = stack.request("POST", "/v1/chat/completions", {"model": "auto", "messages": SENTINEL}, headers=auth)
    assert bad.status == 400
    kong = stack.request("POST", "/v1/router/execute", execute_body(VIBE, prompt), headers=auth)
    assert kong.status == 200 and SENTINEL in kong.body.decode()
    watch.until(lambda: any(j["id"] == job and j["status"] == "succeeded" for j in watch.of("job")))
    watch.until(lambda: len(watch.of("decision")) >= 5 and len(watch.of("state")) >= 2)
    explained = [stack.request("GET", f"/v1/router/decisions/{d['seq']}", headers=auth)
                 for d in watch.of("decision") if d["explained"]]
    assert len(explained) >= 3 and all(r.status == 200 for r in explained)
    late = Watch(stack, key=KEY)  # a hello with decisions and jobs in it
    everything = bytes(watch.seen) + bytes(late.seen) + b"".join(r.body for r in explained)
    assert b'"decisions":[{' in late.seen and job.encode() in late.seen
    for secret in (SENTINEL, KEY, KEY[8:], KEY_ID):  # not even the key's id (jobs are owned by it)
        assert secret.encode() not in everything, secret


def test_a_slow_reader_is_bounded_and_told_what_it_lost(stack):
    hub = stack.app.events
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.port))
    sock.sendall(b"GET /v1/router/events HTTP/1.1\r\nHost: localhost\r\n\r\n")  # and then never read
    wait_for(lambda: hub.subscribers)
    sub = hub.subscribers[0]
    pad = "x" * 8000

    async def flood() -> None:
        # Bursts with the loop free in between, so the feed writes until the socket pushes back.
        deadline = time.monotonic() + 20
        while sub.dropped < 1000 and time.monotonic() < deadline:
            for _ in range(50):
                hub.publish(RuntimeEvent({"pad": pad}))
            await asyncio.sleep(0.005)

    stack.call(flood(), timeout=30)
    assert sub.dropped >= 1000
    held = stack.run(lambda: (len(sub.frames), sum(map(len, sub.frames)),
                              [c.transport.get_write_buffer_size() for c in stack.app.server.connections]))
    assert held[0] <= hub.limit and held[1] <= hub.limit * 8200  # the queue: at most `limit` frames
    assert max(held[2]) < 1024 * 1024  # the transport: paused at its high-water mark, not growing
    # Reading again: the backlog, then how much was lost in all, then a fresh hello to redraw from.
    sock.settimeout(10)
    seen = b""
    lost = stack.run(lambda: sub.dropped)
    told = re.compile(rb"event: dropped\ndata: \{\"dropped\":(\d+)\}\n\nevent: hello\n")
    while max((int(n) for n in told.findall(seen)), default=0) < lost:
        chunk = sock.recv(1 << 20)
        assert chunk, "the feed ended"
        seen = seen[-100_000:] + chunk
    sock.close()
    wait_for(lambda: not hub.subscribers)


def test_the_feed_ends_when_the_router_stops():
    stack = Stack().start()
    try:
        watch = Watch(stack)
        started = time.monotonic()
        assert stack.call(stack.app.stop(10.0)) is True  # every request, the feed too, finished in the grace
        assert time.monotonic() - started < 5
        with pytest.raises(ClientError, match="closed"):
            watch.until(lambda: False)
        stack.call(stack.sim.stop())
    finally:
        stack.end_loop()


def test_access_follows_ui_plane(stack_factory):
    stack = stack_factory(secured())
    assert stack.request("GET", "/v1/router/events").json()["error"]["code"] == "api_key_required"
    assert stack.request("GET", "/v1/router/decisions/1").status == 401
    admin = stack_factory({"ui": {"plane": "admin"}})  # the admin plane is off here: the feed does not exist
    assert admin.request("GET", "/v1/router/events").status == 404
    assert admin.request("GET", "/ui/").status == 200  # the page itself holds nothing and is always served
    with pytest.raises(ConfigError, match="ui.plane: must be one of runtimeAgent, admin"):
        make_config({"ui": {"plane": "standalone"}})


def test_head_of_the_feed_is_the_head_alone(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    for _ in range(2):  # one keep-alive connection: nothing follows the head, so the next request is answered
        conn.request("HEAD", "/v1/router/events")
        reply = conn.getresponse()
        assert (reply.status, reply.read(), reply.getheader("content-type")) == (200, b"", "text/event-stream")
    conn.close()
    assert not stack.app.events.subscribers


def test_readers_beyond_the_limit_are_turned_away(stack):
    stack.app.events.max_subscribers = 1
    first = Watch(stack)
    busy = stack.request("GET", "/v1/router/events")
    assert busy.status == 503 and busy.json()["error"]["code"] == "feed_busy" and busy.headers["retry-after"] == "5"
    first.close()
    wait_for(lambda: not stack.app.events.subscribers)
    Watch(stack)


# ---- the page ---------------------------------------------------------------------------------------------

def test_the_page_is_one_small_self_contained_file(stack_factory):
    stack = stack_factory({"server": {"basePath": "/router"}})
    page = stack.request("GET", "/ui/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert stack.request("GET", "/ui").body == page.body
    html = page.body.decode()
    code = "".join(re.findall(r"<(?:script|style)>(.*?)</(?:script|style)>", html, re.S))
    assert len(code.encode()) < 60 * 1024 and html.count("<script") == 1 and html.count("<style") == 1
    assert not re.search(r"(src|href)=\"(?!data:)|https?://|@import|url\(", html)  # nothing from elsewhere
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "localStorage" not in html and "sessionStorage.setItem" in html  # the key lives for the tab only


def test_serve_prints_the_dashboard_url_and_it_answers(tmp_path):
    """The README's first command: ``serve --simulate``, then open the URL it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "ollama_agent_router", "serve", "--simulate", "--port", "0",
                             "--log-level", "warning"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        printed = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 30
            while b"/ui/\n" not in printed and time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
                printed += os.read(proc.stdout.fileno(), 4096) or b"(ended)"
        url = re.search(rb"^Dashboard: (http://127\.0\.0\.1:\d+/ui/)$", printed, re.M)
        assert url, printed
        url = url.group(1).decode()
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<title>ollama-agent-router</title>" in page.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc.stdout.close()


def test_dashboard_url_for_wildcard_binds_and_base_paths():
    assert dashboard_url("http", "0.0.0.0", 11435, "/") == "http://127.0.0.1:11435/ui/"
    assert dashboard_url("https", "::", 8443, "/router") == "https://[::1]:8443/router/ui/"
    assert dashboard_url("http", "10.0.0.5", 80, "/") == "http://10.0.0.5:80/ui/"
