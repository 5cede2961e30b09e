"""Chaos, short: random stages SIGKILLed every two seconds while processes come and go.
The long run is ``python -m bench.chaos``."""

from __future__ import annotations

from pathlib import Path

from simulation.chaos import run_chaos


def test_chaos(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, seconds=20, kill_every=2.0, seed=7)
    assert sum(report.kills.values()) >= 9
    assert report.lived_two_rounds > 100
    assert report.without_verdict == []
    assert report.zombies == []
    start, end = report.supervisor_rss_kb
    assert end - start < 4096, report.supervisor_rss_kb  # flat: under 4 MiB of growth
