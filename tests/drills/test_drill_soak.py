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
