"""``oar top``: one frame drawn from a fake feed (every section checked), and the command against a live router."""

from __future__ import annotations

import fcntl
import os
import pty
import selectors
import struct
import subprocess
import sys
import termios
import time

from conftest import VIBE, chat_body
from test_cli import cli_env, run_cli
from test_events import KEY, Watch, secured

from ollama_agent_router.commands.top import View, frame

NOW = 1_800_000_000_000  # ms
HELLO = {
    "node": "gpu-box", "version": "0.2.0", "gpuProvider": "nvidia", "reserveMb": 1024,
    "runtime": {
        "status": "ok", "ollamaReachable": True,
        "loadedModels": [{"name": "small:1b", "sizeVramBytes": 2048 * 1024 * 1024},
                         {"name": "coder:7b", "sizeVramBytes": 6144 * 1024 * 1024}],
        "gpu": {"source": "nvml", "devices": [{"index": 0, "name": "RTX 4000 SFF Ada", "totalMb": 20480,
                                               "usedMb": 10240, "freeMb": 10000, "utilizationPct": 37}]},
    },
    "state": {
        "at": NOW,
        "models": [
            {"name": "small:1b", "loaded": True, "processor": "100% gpu", "vramMb": 2048, "sizeMb": 1800,
             "running": 1, "maxConcurrent": 2, "queued": {"low": 1, "normal": 2, "high": 3}, "cooldownMs": None,
             "lastUsed": NOW - 5000},
            {"name": "coder:7b", "loaded": True, "processor": "100% gpu", "vramMb": 6144, "sizeMb": 4813,
             "running": 0, "maxConcurrent": 1, "queued": {"low": 0, "normal": 0, "high": 0}, "cooldownMs": None,
             "lastUsed": NOW - 125_000},
            {"name": "big:20b", "loaded": False, "processor": "", "vramMb": None, "sizeMb": 14336, "running": 0,
             "maxConcurrent": 1, "queued": {"low": 0, "normal": 0, "high": 0}, "cooldownMs": 12500,
             "lastUsed": None},
        ],
        "queue": {"queued": 6, "running": 1},
        "jobs": {"queued": 1, "running": 1, "succeededRetained": 4, "failedRetained": 1, "cancelledRetained": 0,
                 "expiredRetained": 0,
                 "progress": [{"id": "job_run", "model": "small:1b", "elapsedMs": 4200, "tokens": 168,
                               "tokensEstimated": True}]},
        "rates": {"windowSeconds": 60, "requests": 150, "perSecond": 2.5, "p50Ms": 120.5, "p95Ms": 2400.0,
                  "status429": 3, "status503": 2},
    },
    "decisions": [
        {"seq": 7, "at": NOW - 9000, "api": "ollama", "plane": "standalone", "task": "simple_chat", "model": "small:1b",
         "mode": "stream", "status": 200, "queueMs": 0, "durationMs": 850.0, "reason": "Selected small:1b", "explained": True},
        {"seq": 9, "at": NOW - 3000, "api": "openai", "plane": "standalone", "task": "code_fix", "model": "coder:7b",
         "mode": "sync", "status": 200, "queueMs": 35, "durationMs": 3200.0, "reason": "Selected coder:7b for code_fix",
         "explained": True},
    ],
    "jobs": [
        {"id": "job_done", "status": "succeeded", "model": "coder:7b", "task": "code_review", "priority": "normal",
         "attempts": 1, "createdAt": NOW - 60_000, "startedAt": NOW - 59_000, "finishedAt": NOW - 50_000},
        {"id": "job_run", "status": "running", "model": "small:1b", "task": "summarize", "priority": "low",
         "attempts": 1, "createdAt": NOW - 5000, "startedAt": NOW - 4200, "finishedAt": None},
    ],
}


def fake_view() -> View:
    view = View()
    view.apply("hello", HELLO)
    view.apply("decision", {"seq": 12, "at": NOW - 1000, "api": "kong", "plane": "runtimeAgent", "task": "triage",
                            "model": None, "mode": "sync", "status": 503, "queueMs": 0, "durationMs": 5000.0,
                            "reason": "queue_timeout on small:1b: Chosen by Kong", "explained": False})
    view.apply("job", {"id": "job_wait", "status": "queued", "model": "big:20b", "task": "large_context",
                       "priority": "high", "attempts": 0, "createdAt": NOW - 2000, "startedAt": None, "finishedAt": None})
    return view


def section(lines: list[str], title: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def test_every_section_of_a_frame():
    lines = frame(fake_view(), width=160)
    assert lines[0].startswith("oar top - node gpu-box - ")
    gpu = section(lines, "GPU")
    assert gpu[0] == "GPU (source: NVML)"
    assert gpu[1].startswith("  0 RTX 4000 SFF Ada [") and gpu[1].endswith("] 20.0 GB, 37% busy")
    bar = gpu[1][gpu[1].index("[") + 1 : gpu[1].index("]")]
    # 8 GB of models and 2 GB of other use in 20 GB, 240 MB the driver keeps, 1 GB reserve, the rest free.
    assert (bar.count("#"), bar.count("="), bar.count("!")) == (24, 6, 3) and bar.startswith("#") and bar.endswith(".")
    assert gpu[2].startswith("    #") and gpu[2].strip().split("  ") == ["# loaded models 8.0 GB", "= other use 2.0 GB", "~ driver reserved 240 MB",
                                  "! safety reserve 1.0 GB", ". free 8.8 GB"]
    rates = next(line for line in lines if line.startswith("Requests"))
    assert rates == ("Requests (last 60 s): 2.5 req/s  p50 120 ms  p95 2.40 s  429: 3  503: 2  "
                     "queued 6 / running 1")
    models = section(lines, "MODELS")
    assert models[1].split() == ["MODEL", "LOADED", "VRAM", "RUN", "QUEUED", "H/N/L", "COOLDOWN", "LAST", "USED"]
    assert models[2].split() == ["small:1b", "100%", "gpu", "2.0", "GB", "1/2", "3/2/1", "-", "in", "use"]
    assert models[3].split() == ["coder:7b", "100%", "gpu", "6.0", "GB", "0/1", "0/0/0", "-", "2", "min", "ago"]
    assert models[4].split() == ["big:20b", "no", "~14.0", "GB", "0/1", "0/0/0", "12.5", "s", "-"]
    decisions = section(lines, "DECISIONS")
    assert decisions[0] == "DECISIONS (newest first, 3 kept)"
    assert [row.split()[1:5] for row in decisions[2:]] == [["kong", "triage", "-", "sync"],
                                                          ["openai", "code_fix", "coder:7b", "sync"],
                                                          ["ollama", "simple_chat", "small:1b", "stream"]]
    assert decisions[2].split()[5:9] == ["0.0", "ms", "5.00", "s"] and "503" in decisions[2]
    assert decisions[2].endswith("queue_timeout on small:1b: Chosen by Kong")
    jobs = section(lines, "JOBS")
    assert jobs[0] == "JOBS (1 queued, 1 running, 4 succeeded, 1 failed)"
    assert [row.split()[:2] for row in jobs[2:]] == [["job_run", "running"], ["job_wait", "queued"],
                                                   ["job_done", "succeeded"]]
    assert jobs[2].endswith("~168 tokens, 4.20 s") and jobs[3].endswith("waiting 2.00 s")
    assert jobs[4].endswith("ran 9.00 s")


def test_a_frame_fits_its_screen_and_says_what_was_dropped():
    view = fake_view()
    view.apply("dropped", {"dropped": 17})
    lines = frame(view, width=50, height=30)
    assert all(len(line) <= 50 for line in lines) and len(lines) <= 30
    assert "17 events dropped" in frame(view, width=200)[0]
    bare = View()
    bare.apply("hello", {**HELLO, "gpuProvider": "none", "runtime": {"loadedModels": []}, "decisions": [], "jobs": []})
    assert "GPU: none configured (gpu.provider: none)" in frame(bare)


def test_top_once_against_a_live_router(stack_factory):
    stack = stack_factory(secured())
    watch = Watch(stack, key=KEY)  # decisions are kept while someone watches
    auth = {"authorization": f"Bearer {KEY}"}
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there"), headers=auth).status == 200
    watch.until(lambda: watch.of("decision"))
    refused = run_cli("-u", stack.url, "top", "--once")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == f"HTTP 401 from {stack.url}/v1/router/events: API key required\n"
    done = run_cli("-u", stack.url, "--api-key", KEY, "top", "--once")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("oar top - node test-node - ") and "GPU (source: simulator)" in out
    assert "\nMODELS\n" in out and f"\n{VIBE}  " in out
    row = next(line for line in out.splitlines() if line.split()[1:2] == ["openai"])
    assert row.split()[2:5] == ["simple_chat", VIBE, "sync"] and " 200 " in row
    assert "\nJOBS (0 queued, 0 running, 0 succeeded, 0 failed)\n" in out


def test_top_prints_plain_frames_when_not_on_a_terminal(stack):
    proc = subprocess.Popen([sys.executable, "-m", "ollama_agent_router", "-u", stack.url, "top"], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            while out.count(b"oar top - node") < 2 and sel.select(max(0.0, deadline - time.monotonic())):
                out += os.read(proc.stdout.fileno(), 65536)
        assert out.count(b"oar top - node test-node") >= 2 and b"\x1b" not in out  # frames, and no escape codes
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_top_full_screen_on_a_terminal_quits_on_q(stack):
    """On a terminal (a pseudo-terminal here) ``oar top`` draws with curses and ``q`` ends it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "ollama_agent_router", "-u", stack.url, "top"],
                            env={**cli_env(), "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        screen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(master, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            while b"q: quit" not in screen and sel.select(max(0.0, deadline - time.monotonic())):
                screen += os.read(master, 65536)
        assert b"MODELS" in screen and b"DECISIONS" in screen and b"q: quit" in screen
        os.write(master, b"q")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
