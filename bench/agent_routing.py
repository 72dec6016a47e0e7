"""Where the captured agent requests (tests/data/agents/) go with a config, and whether conversations stay put.

    python bench/agent_routing.py [CONFIG]        # default: the bundled gex44 profile

Every request is routed as the router would route it now (idle models, no GPU reading), with no request run:

- the mix: the model each user ask gets when its conversation is new (no sticky session), per client;
- stickiness: the requests replayed in capture order, each conversation's turns one after another, with the
  answered model remembered as the runner remembers it; the share of later turns that stayed on the model
  of their conversation's first turn.
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ollama_agent_router.api.explain import conversation_of
from ollama_agent_router.app import App
from ollama_agent_router.classifier_eval import Case, load_cases
from ollama_agent_router.config.files import load_config
from ollama_agent_router.log import Logger
from ollama_agent_router.options import normalize_meta
from ollama_agent_router.runner import Routed, Runner

AGENTS = ROOT / "tests" / "data" / "agents"
SETS = ("claude_code", "codex", "claude_code_holdout", "codex_holdout")
GEX44 = ROOT / "ollama_agent_router" / "data" / "gex44.yaml"


def runner_for(config: Path = GEX44) -> Runner:
    return App(load_config(str(config)), log=Logger("error", io.StringIO())).runner


def every_case() -> list[tuple[str, Case]]:
    """(client, case) for every captured request, in capture order."""
    return [(name.removesuffix("_holdout"), c) for name in SETS for c in load_cases(AGENTS / f"{name}.jsonl")]


def route(runner: Runner, case: Case) -> Routed:
    """The decision the router makes for ``case`` now, read through its door as an agent's (which waits)."""
    _, body, conversation = conversation_of(case.body)
    meta = normalize_meta(body.get("router"), runner.cfg)._replace(allow_async=False)
    return runner.route(conversation, meta, pinned=runner.pin(body.get("model")), client=body, headers=case.headers)


def mix(runner: Runner) -> dict[str, Counter]:
    """Client -> the models the user asks got, each routed as a new conversation (nothing is remembered)."""
    out: dict[str, Counter] = {}
    for client, case in every_case():
        if case.turn == "ask":
            out.setdefault(client, Counter())[route(runner, case).decision.model] += 1
    return out


def stickiness(runner: Runner) -> tuple[int, int, int]:
    """(conversations, later turns, those of them kept on their first turn's model as sticky)."""
    first: dict[str, str] = {}
    later = kept = 0
    for _, case in every_case():
        routed = route(runner, case)
        model = routed.decision.model
        assert routed.session is not None and model is not None
        runner.sessions.remember(routed.session, model)  # as the runner does once the turn is answered
        if routed.session.digest in first:
            later += 1
            kept += model == first[routed.session.digest] and routed.decision.sticky
        else:
            first[routed.session.digest] = model
    return len(first), later, kept


def main(argv: list[str]) -> int:
    config = Path(argv[0]) if argv else GEX44
    print(f"config: {config.name}")
    for client, models in mix(runner_for(config)).items():
        total = sum(models.values())
        shares = ", ".join(f"{m} {n} ({n / total:.0%})" for m, n in models.most_common())
        print(f"{client}: {total} asks -> {shares}")
    conversations, later, kept = stickiness(runner_for(config))
    print(f"stickiness: {conversations} conversations, {kept}/{later} later turns on their first turn's model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
