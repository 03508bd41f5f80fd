"""The bad-input battery (bench/bench_hostile.py) against the server as deployed, on the default zoo."""

from __future__ import annotations

import pytest

from bench.bench_hostile import battery, report
from bench.bench_server import running_server
from zoo.store import DEFAULT_ZOO

PEAK_GROWTH_MIB = 300  # the worst case may add this much to the warm server's peak RSS


@pytest.mark.slow
def test_hostile_battery_gets_no_5xx_in_bounded_time_and_memory(tmp_path):
    with running_server(str(DEFAULT_ZOO), tmp_path) as served:
        result = battery(served.url, served.pid, tmp_path, str(DEFAULT_ZOO))
    text = report(result)
    assert len(result.outcomes) >= 200, text
    assert not result.failures, text
    assert result.healthy_after, text
    assert result.uncovered == [], text  # every route the server documents is in the battery
    growth_mib = (result.rss_after["VmHWM"] - result.rss_before["VmRSS"]) / 1024
    assert growth_mib < PEAK_GROWTH_MIB, text
