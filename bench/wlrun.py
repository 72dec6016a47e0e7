"""One run of the workload benchmark: one policy, one seed, in virtual time (see ``vclock``).

The simulator plays the gex44 box (``examples/gex44.yaml``: 20 GB, a triage model, two coders and the
exclusive 20B reasoning model) with Ollama's own FIFO scheduler, VRAM accounting and eviction, loads that
take ``load_s_per_gb`` seconds per GB, a generation rate per model, and one GPU that requests generating
at the same time share. The agents' requests (``agents.schedule``) go either straight to the simulator
(policy ``direct``, each agent naming its own model) or through the router (``auto``, but for the planner),
over loopback HTTP, all in one event loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vclock  # noqa: E402  (before the package: constructors keep time.monotonic as a default argument)

vclock.install()

import asyncio  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from agents import AGENTS, DEEPSEEK, QWEN, Request, schedule  # noqa: E402

from ollama_agent_router.app import App  # noqa: E402
from ollama_agent_router.config.parse import parse_config  # noqa: E402
from ollama_agent_router.log import Logger  # noqa: E402
from ollama_agent_router.simulator.server import OllamaSimulator  # noqa: E402
from ollama_agent_router.upstream import OllamaClient, UpstreamError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "examples" / "gex44.yaml"
PROMPT_SPEEDUP = 20  # the simulator reads prompt tokens this many times faster than it generates

# Generation rates on the gex44's RTX 4000 SFF Ada (280 GB/s), roughly what decoding at Q4 gets from
# its memory bandwidth; gpt-oss is a mixture of experts, so it decodes faster than its size suggests.
RATES = {"B-A-M-N/vibethinker:1.5b": 60.0, "qwen2.5-coder:7b": 45.0, "deepseek-coder:6.7b": 50.0,
         "gpt-oss:20b": 45.0}

# The router's queue settings per policy (None: straight to the simulator); each says steering outright,
# since the shipped profile turns it on.
POLICIES: dict[str, dict | None] = {
    "direct": None,
    "fifo": {"loadBatching": False, "agingMs": 0, "steerEvictions": False},
    "full": {"steerEvictions": False},
    "steer": {"steerEvictions": True},
}
RETRIES = 2  # as the OpenAI SDKs do: two more tries after a 429 or 503, after its Retry-After
TIMEOUT_S = 900.0


@dataclass
class Options:
    policy: str = "full"
    seed: int = 1
    horizon: float = 1800.0  # seconds of arrivals
    load_s_per_gb: float = 2.0
    timeline: bool = False  # keep the simulator's residency timeline (for the plot)
    single_coder: bool = False  # a variant: the code routes list qwen2.5-coder:7b alone


@dataclass
class Outcome:
    agent: str
    at: float
    status: int = 0
    latency: float = 0.0  # first send to the whole reply, retries included
    wait: float = 0.0  # the part of it not spent on its own prompt and tokens: queues, loads, a shared GPU
    queued: float | None = None  # of which in the router's queue (its X-Router-Queue-Time-Ms)
    model: str = ""
    refused: list[int] = field(default_factory=list)  # 429 and 503 answers, retried or final


def router_config(sim_url: str, queue: dict, single_coder: bool) -> Any:
    raw = yaml.safe_load(PROFILE.read_text())
    raw["ollama"]["baseUrl"] = sim_url
    raw["queue"].update(queue)
    if single_coder:
        for task in ("code_generate", "code_fix", "code_review"):
            raw["routes"][task] = [QWEN]
        for model in raw["models"]:
            if model["name"] == DEEPSEEK:
                model["purpose"] = [p for p in model["purpose"] if not p.startswith("code_")]
    return parse_config(raw)


def _usage(data: bytes, stream: bool) -> dict:
    """The reply's usage: the JSON body's, or the last SSE event that carries one."""
    if not stream:
        return json.loads(data).get("usage") or {}
    for line in reversed(data.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            return json.loads(line[6:]).get("usage") or {}
    return {}


async def _send(client: OllamaClient, req: Request, model: str, out: Outcome) -> None:
    loop = asyncio.get_running_loop()
    body = json.dumps({**req.body, "model": model}).encode()
    start = loop.time()
    for attempt in range(RETRIES + 1):
        try:
            resp = await client.request("POST", "/v1/chat/completions", body, timeout=TIMEOUT_S)
            data = await resp.read()
        except UpstreamError as e:
            out.status = {"timeout": 504, "connect": 503}.get(e.kind, 502)
            return
        out.status = resp.status
        if resp.status not in (429, 503):
            break
        out.refused.append(resp.status)
        if attempt < RETRIES:
            after = resp.headers.get("retry-after", "1")
            await asyncio.sleep(min(60.0, float(after)) if after.isdigit() else 1.0)
    out.latency = loop.time() - start
    if out.status != 200:
        return
    out.model = resp.headers.get("x-router-selected-model", model)
    queued = resp.headers.get("x-router-queue-time-ms")
    out.queued = None if queued is None else int(queued) / 1000
    usage = _usage(data, req.stream)
    rate = RATES[out.model]
    own = usage.get("prompt_tokens", 0) / (rate * PROMPT_SPEEDUP) + usage.get("completion_tokens", 0) / rate
    out.wait = max(0.0, out.latency - own)


async def _drive(url: str, requests: list[Request], direct: bool) -> list[Outcome]:
    """Send every request at its arrival time; wait for all of them."""
    loop = asyncio.get_running_loop()
    client = OllamaClient(url, pool_size=256)
    models = {a.name: a.direct_model if direct else a.router_model for a in AGENTS}
    t0 = loop.time()
    outcomes = [Outcome(r.agent, r.at) for r in requests]

    async def one(req: Request, out: Outcome) -> None:
        await asyncio.sleep(max(0.0, t0 + req.at - loop.time()))
        await _send(client, req, models[req.agent], out)

    try:
        await asyncio.gather(*(one(r, o) for r, o in zip(requests, outcomes)))
    finally:
        await client.aclose()
    return outcomes


async def run(opts: Options) -> dict:
    """One policy on one seed's schedule: every request's outcome and the simulator's accounting."""
    loop = asyncio.get_running_loop()
    queue = POLICIES[opts.policy]
    cfg = router_config("http://127.0.0.1:1", queue or {}, opts.single_coder)
    sim = OllamaSimulator.from_config(
        cfg, rates=RATES, load_seconds_per_gb=opts.load_s_per_gb, reply_tokens=100_000, shared_gpu=True,
        record_activity=opts.timeline, log=Logger("error"))
    await sim.start()
    app = None
    try:
        url = sim.url
        if queue is not None:
            app = App(router_config(sim.url, queue, opts.single_coder), log=Logger("error"),
                      gpu_backend=sim.gpu_backend())
            url = f"http://127.0.0.1:{await app.start('127.0.0.1', 0)}"
        t0 = loop.time()
        outcomes = await _drive(url, schedule(opts.seed, opts.horizon), direct=queue is None)
        makespan = loop.time() - t0
        totals = sim.activity.totals()
    finally:
        if app is not None:
            await app.stop(1.0)
        await sim.stop()
    timeline = [(t - t0, m, s) for t, m, s in sim.activity.timeline or ()]
    return {"policy": opts.policy, "seed": opts.seed, "makespan": makespan, "gpu": totals, "loads": sim.loads,
            "outcomes": [o.__dict__ for o in outcomes], "timeline": timeline if opts.timeline else None}


def main(argv: list[str]) -> None:
    """``wlrun.py '{"policy": "full", "seed": 1, ...}'`` (``Options`` as JSON): one run, its result as JSON."""
    opts = Options(**json.loads(argv[0]))
    json.dump(vclock.run(lambda: run(opts)), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
