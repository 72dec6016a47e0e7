"""CI variants of the crash drills: kill -9 during admin writes and under async load, and SIGTERM."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import kill_admin  # noqa: E402
import kill_jobs  # noqa: E402
import shutdown  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs POSIX signals")


def test_kill_9_during_admin_writes_leaves_the_old_or_the_new_file(tmp_path):
    seed = random.randrange(2**32)
    r = kill_admin.run(6, seed, tmp_path)
    assert not r["corrupt"], kill_admin.report(r)
    assert r["outcomes"]["old"] + r["outcomes"]["new"] == 6


def test_kill_9_under_async_load_loses_and_duplicates_no_job(tmp_path):
    r = kill_jobs.run(3, 8.0, random.randrange(2**32), tmp_path, up_s=(0.8, 1.6))
    assert r["accepted"] > 10
    assert not kill_jobs.failures(r), kill_jobs.report(r)


def test_sigterm_finishes_in_flight_requests_and_keeps_queued_jobs(tmp_path):
    rounds = shutdown.run(1, tmp_path, jobs=6)
    assert not shutdown.failures(rounds), shutdown.report(rounds)
