"""The fault matrix (bench/drills/fault_matrix.py), one request per cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import fault_matrix  # noqa: E402


@pytest.mark.parametrize("make_row", fault_matrix.ROWS, ids=lambda make: make().name)
def test_fault_matrix_row(make_row):
    row = fault_matrix.run_row(make_row(), repeat=1)
    wrong = {m: (c.outcome, c.leaks, c.recovered) for m, c in row.cells.items() if not c.ok}
    assert not wrong, f"{row.name}: {wrong}; expected {row.expect}"
    assert max(c.runtime_max_ms for c in row.cells.values()) < 1000
