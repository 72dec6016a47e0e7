"""CI variants of bench/drills/hostile_http.py (smuggling shapes, slowloris, slow bodies, an idle flood over
the connection cap, and path tricks checked against the handler and plane they reach) and of
bench/drills/pipeline_flood.py (a client that pipelines megabytes and never reads)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import hostile_http as hostile  # noqa: E402
import pipeline_flood  # noqa: E402
from drillkit import RouterProcess  # noqa: E402

C = hostile.QUICK


def test_smuggling_slow_clients_and_idle_flood(tmp_path):
    router = RouterProcess(tmp_path, hostile.router_config(C), simulate=True).start()
    try:
        smuggling = hostile.drill_smuggling(router.port, (C.header_timeout_ms + C.body_timeout_ms) / 1000 + 3)
        slow = asyncio.run(hostile.drill_slow(router.port, C))
        idle = asyncio.run(hostile.drill_flood(router, C, fat=False))
        fat = asyncio.run(hostile.drill_flood(router, C, fat=True))
    finally:
        router.stop()
    assert not smuggling["failures"], smuggling["failures"]
    assert not slow["failures"], slow["failures"]
    assert slow["slowloris"] and slow["slow_body"] and slow["probe_requests"]
    for flood in (idle, fat):
        assert not flood["failures"], flood["failures"]
        assert flood["alive"] and flood["outcomes"]["refused 503"] >= C.flood - C.max_connections
        assert flood["rss_after_kb"] < flood["rss_before_kb"] * 1.5


def test_fewer_descriptors_than_connections_lowers_the_cap_and_logs_no_traceback_flood(tmp_path):
    out = hostile.drill_fd_limit(tmp_path, C)
    assert not out["failures"], out


def test_path_tricks_reach_only_the_handler_and_plane_they_should(stack_factory, tmp_path):
    stack = stack_factory(hostile.path_stack_override(tmp_path))
    result = hostile.drill_paths(stack, hostile.path_keys())
    assert result["tricks"] >= 50
    assert not result["failures"], result["failures"]


def test_a_client_that_pipelines_and_never_reads_is_bounded(tmp_path):
    out = pipeline_flood.run(pipeline_flood.QUICK, tmp_path)
    assert not out["failures"], (out["failures"], pipeline_flood.report(out, pipeline_flood.QUICK))
