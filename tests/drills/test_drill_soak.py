"""The soak's CI variant: 30 seconds of the same mixed load as bench/drills/soak.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import soak  # noqa: E402


def test_soak_30_seconds(tmp_path):
    run, judged, end = soak.run(30, tmp_path)
    assert end["alive"]
    assert not judged["failures"], soak.report(run, judged, end)
    totals = judged["totals"]
    assert totals["sync 200"] and totals["stream 200"] and totals["async result 200"]
    assert totals["limited key 429 rate_limit_exceeded"] and run.dropped_streams


def windows(fds_per_window: list[list[int]]) -> "soak.Soak":
    run = soak.Soak(0, 30)
    run.windows = [soak.Window(started=i, rss_kb=[30_000] * len(f), fds=f, sync_latency=[0.06] * 20)
                   for i, f in enumerate(fds_per_window)]
    return run


def test_descriptor_churn_passes_and_a_leak_fails():
    # As measured: the fewest open at once swing by 3 to 5 between windows, the most stay put.
    churn = [[16, 19, 18], [19, 20, 19]] + [[18, 20, 17], [15, 19, 20], [17, 20, 19]] * 2 + [[19, 19, 20]] * 2
    assert not soak.judge_run(windows(churn))["failures"]
    leak = [[16, 17, 18]] + [[18 + 2 * i, 19 + 2 * i, 20 + 2 * i] for i in range(9)]
    failures = soak.judge_run(windows(leak))["failures"]
    assert failures and all("open fds" in f for f in failures)
