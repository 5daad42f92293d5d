"""The short soak of bench/soak.py: 64 concurrent clients for 12 s, then an overload burst.

No valid call may fail, the server's memory may not grow by 10% after the warm-up, calls beyond
the queue bound are refused RESOURCE_EXHAUSTED within seconds, and the server exits 0. The
figures are printed (``pytest -s``); ``python bench/soak.py`` runs the 60 s version.
"""

from __future__ import annotations

import sys

import pytest

from bench.soak import BURST_LIMIT_S, GOAL_RSS_GROWTH, format_report, soak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")


def test_short_soak():
    report = soak(clients=64, seconds=12, warmup=4)
    print("\n" + format_report(report))
    assert report.calls > 1000
    assert report.failed == 0, report.failures
    assert report.rss_growth < GOAL_RSS_GROWTH
    assert report.burst_other == [] and report.burst_refused > report.burst_answered
    assert report.burst_max_s < BURST_LIMIT_S
    assert report.exit_status == 0
