"""The workload benchmark's short CI variant: it completes, and the full scheduler does not load models more
often than first come, first served. Runs are in virtual time, so the figures do not depend on how busy this
machine is: only counts are compared, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_agent_router.classifier import classify

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
from agents import AGENTS, _text  # noqa: E402


@pytest.mark.parametrize("agent", AGENTS, ids=lambda a: a.name)
def test_each_agents_requests_classify_as_its_kind_of_work(agent):
    for ask in agent.asks:
        for context in agent.context_tokens:
            text = _text(agent, ask, context, agent.reply_tokens[1])
            assert classify([{"role": "user", "content": text}]).task_type in agent.task_types


def test_the_short_workload_completes_and_full_loads_no_more_than_fifo():
    argv = [sys.executable, str(BENCH / "workload.py"), "--seeds", "1", "--minutes", "8",
            "--policies", "fifo,full,steer", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    medians = json.loads(done.stdout)["medians"]
    for policy in ("fifo", "full", "steer"):
        figures = medians[policy]
        assert figures["failed requests"] == 0 and figures["triage requests"] > 20
        assert figures["coder requests"] > 0 and figures["planner requests"] > 0
    assert medians["full"]["model loads"] <= medians["fifo"]["model loads"]
    assert medians["steer"]["model loads"] <= medians["full"]["model loads"]
