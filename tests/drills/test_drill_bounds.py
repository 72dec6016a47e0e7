"""The bounds drill's CI variant: every attack of bench/drills/bounds.py at the --quick sizes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import bounds  # noqa: E402


def test_bounds_under_hostile_load(tmp_path):
    sizes = bounds.Sizes.quick()
    rows = bounds.run(sizes, tmp_path)
    assert {r.item for r in rows} >= {"2", "3", "4", "6", "7", "8", "11", "12", "14", "16"}
    assert all(r.ok for r in rows), bounds.report(rows, sizes)
