"""The agents of the workload benchmark and the seeded schedule of their requests.

Three agent types share one GPU, each sending its requests at Poisson arrival times:

- triage: a background pipeline of many short classify and summarise calls. It is the one agent that
  opts in to the router: it marks its work ``low`` priority (and ``mode: sync``, as it waits for each answer);
- coder: medium code generation and fixes over a few thousand tokens of code, some of them streamed;
- planner: a few long reasoning calls over a design document. It names its reasoning model, also when it
  talks to the router (which then runs it there): its work needs that model, not the best one at hand.

Every request is an OpenAI chat completion. Its last user turn ends with ``ECHO:`` and one character per
reply token, which the simulator answers with exactly that many tokens, so reply lengths are part of the
seeded schedule and the same for every policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MODELS = VIBE, QWEN, DEEPSEEK, GPTOSS = (
    "B-A-M-N/vibethinker:1.5b", "qwen2.5-coder:7b", "deepseek-coder:6.7b", "gpt-oss:20b")  # examples/gex44.yaml

_TICKET = ("Customer reports that the export button does nothing on the reports page since the last update. "
           "They use the desktop app on Windows and tried reinstalling. ")
_CODE = ("def total(items):\n    result = 0\n    for item in items:\n        result += item.price * item.qty\n"
         "    return result\n\n")
_DESIGN = ("The billing service owns invoices, payments and refunds; the account service owns customers and "
           "plans. Both write to one database today, and nightly jobs reconcile them. ")


@dataclass(frozen=True)
class Agent:
    name: str
    rate: float  # arrivals per second (Poisson)
    direct_model: str  # the model this agent names when it talks to Ollama directly
    asks: tuple[str, ...]  # what it asks, one picked per request
    context: str  # repeated to make up the prompt's context
    context_tokens: tuple[int, int]  # drawn uniformly
    reply_tokens: tuple[int, int]  # drawn uniformly
    stream_share: float = 0.0  # the share of its requests that stream
    router: dict | None = None  # the router object it sends (None: a plain client)
    router_model: str = "auto"  # the model it names when it talks to the router (a configured name pins it)
    task_types: tuple[str, ...] = ()  # what the router's classifier should make of its asks


AGENTS = (
    Agent("triage", 1 / 8, VIBE,
          ("Classify this support ticket as bug, question or feature request.",
           "Summarize this thread in two sentences.",
           "Triage this ticket: which team should own it?"),
          _TICKET, (150, 600), (15, 80), router={"priority": "low", "mode": "sync"},
          task_types=("triage", "summarize")),
    Agent("coder", 1 / 40, QWEN,
          ("Write a Python function that groups these items by category, with unit tests.",
           "Fix the bug in this function: the total is wrong when the quantity is zero.",
           "Implement a caching layer for this Python module."),
          _CODE, (800, 3000), (150, 600), stream_share=0.4, task_types=("code_generate", "code_fix")),
    Agent("planner", 1 / 180, GPTOSS,
          ("Plan the migration of this design to separate services: the steps, the risks and the order of work.",
           "Think step by step and design an architecture plan for the billing rewrite described here."),
          _DESIGN, (1500, 4000), (600, 1500), router_model=GPTOSS, task_types=("agentic_reasoning", "planning")),
)


@dataclass(frozen=True)
class Request:
    agent: str
    at: float  # seconds after the start
    body: dict  # the OpenAI chat body, without ``model``
    reply_tokens: int
    stream: bool


def _text(agent: Agent, ask: str, context_tokens: int, reply_tokens: int) -> str:
    context = (agent.context * (context_tokens * 4 // len(agent.context) + 1))[: context_tokens * 4]
    return f"{ask}\n\n{context}\nECHO: " + "x" * reply_tokens


def schedule(seed: int, horizon: float, agents: tuple[Agent, ...] = AGENTS) -> list[Request]:
    """Every agent's requests that arrive within ``horizon`` seconds, in arrival order: the same list for a
    given seed whatever the policy."""
    out: list[Request] = []
    for index, agent in enumerate(agents):
        rng = random.Random(seed * 1000 + index)  # each agent its own stream: changing one leaves the others
        t = rng.expovariate(agent.rate)
        while t < horizon:
            reply = rng.randint(*agent.reply_tokens)
            text = _text(agent, rng.choice(agent.asks), rng.randint(*agent.context_tokens), reply)
            stream = rng.random() < agent.stream_share
            body: dict = {"messages": [{"role": "user", "content": text}]}
            if stream:
                body.update(stream=True, stream_options={"include_usage": True})
            if agent.router is not None:
                body["router"] = agent.router
            out.append(Request(agent.name, t, body, reply, stream))
            t += rng.expovariate(agent.rate)
    out.sort(key=lambda r: r.at)
    return out
