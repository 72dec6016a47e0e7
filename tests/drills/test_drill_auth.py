"""The hostile auth corpus (bench/drills/auth_corpus.py) in full: it takes a few seconds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import auth_corpus  # noqa: E402


def test_auth_corpus_accepts_exactly_what_it_should(stack_factory, tmp_path):
    corpus = auth_corpus.run(tmp_path, stack_factory)
    assert len(corpus.outcomes) >= 500
    groups = {o.label.split("]")[0] for o in corpus.outcomes}
    assert {"[xff", "[rate", "[cert"} <= groups
    assert not corpus.wrong, auth_corpus.report(corpus)


def test_the_oracle_is_not_the_access_code():
    """Spot checks of the rules as the drill states them, so a shared mistake cannot hide."""
    locked, anonymous, rt_off, std_off = auth_corpus.POLICIES
    assert auth_corpus.should_admit(locked, "standalone", "right")
    assert not auth_corpus.should_admit(locked, "standalone", "none")
    assert auth_corpus.should_admit(anonymous, "standalone", "none")
    assert not auth_corpus.should_admit(anonymous, "standalone", "wrong")  # a bad key never falls back
    assert not auth_corpus.should_admit(anonymous, "jobs", "none")  # the most restrictive enabled plane wins
    assert auth_corpus.should_admit(std_off, "jobs", "none")
    assert not auth_corpus.should_admit(rt_off, "runtimeAgent", "right")
    assert not auth_corpus.should_admit(locked, "admin", "other")
    assert auth_corpus.should_admit(anonymous, "metrics", "wrong")  # metrics without requireApiKey is open
