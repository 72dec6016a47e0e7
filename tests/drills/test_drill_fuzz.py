"""CI variant of bench/drills/fuzz_http.py: a few thousand hostile cases against the parser, the chunked
decoder, the upstream reader + relay, and a live router process."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

import fuzz_http  # noqa: E402
from drillkit import RouterProcess, SimThread  # noqa: E402

SEED = random.randrange(2**32)  # a new corner each run; the seed is in every failure message


def expect_clean(tally: fuzz_http.Tally) -> None:
    assert tally.cases > 0
    assert not tally.failures, f"seed {SEED}: {tally.failed} failures, e.g. {tally.failures[:5]}"


def test_parse_head_fuzz():
    expect_clean(fuzz_http.fuzz_parser(1000, SEED))


def test_chunked_decoder_fuzz():
    expect_clean(fuzz_http.fuzz_chunked(1500, SEED))


def test_upstream_reader_and_relay_fuzz():
    expect_clean(fuzz_http.fuzz_relay(300, SEED))


# The simulator's thread draws request ids from the random module while hypothesis builds a case, which
# hypothesis takes for a strategy using it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_live_router_fuzz(tmp_path):
    sim = SimThread()
    router = RouterProcess(tmp_path, fuzz_http.router_config(sim.url)).start()
    try:
        rss_start = router.rss_kb()
        tally = fuzz_http.fuzz_live(router.port, 600, SEED)
        assert router.alive()
        rss_end = router.rss_kb()
    finally:
        router.stop()
        sim.stop()
    expect_clean(tally)
    log = router.log_text()
    assert '"handler_error"' not in log and "Traceback" not in log, log[-3000:]
    assert rss_end < rss_start * 1.25, (rss_start, rss_end)
