"""The once-a-minute summary `procsmith run` logs, built from the node's real metrics files,
and `procsmith --version`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.health import summary_counts, summary_line
from pipeline.metrics import node_registry

WRITE = """
import sys
from pipeline.metrics import PromMeter, enable_multiprocess
from stages.base import catalog as c
enable_multiprocess(sys.argv[1])
m = PromMeter()
m.inc(c.ROUNDS, 30)
m.set(c.INDEX_SIZE, 812)
m.set(c.WORKSPACE_COUNT, 3)
m.inc(c.RECORDS_IN, 41, stage="match")
m.inc(c.RECORDS_IN, 999, stage="filter")  # not a judgement
m.inc(c.MATCH_FINDINGS, 2, level="very", classifier="signature")
m.inc(c.MATCH_FINDINGS, 1, level="audit", classifier="commandline")
m.inc(c.RECORDS_DROPPED, 5, stage="filter")
m.inc(c.RECORDS_DROPPED, 4, stage="scan")
"""


def test_summary_counts_what_the_stage_processes_wrote(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], check=True, timeout=60)
    counts = summary_counts(node_registry(str(tmp_path)))
    assert counts == {
        "rounds": 30,
        "processes": 812,
        "workspaces": 3,
        "judged": 41,
        "findings": 3,
        "dropped": 9,
    }
    before = {**counts, "rounds": 0, "judged": 40, "findings": 3, "dropped": 1}
    assert summary_line(counts, before, 1.0) == (
        "summary, last 1 min: rounds 30 (+30), processes 812, workspaces 3, judged 41 (+1), "
        "findings 3 (+0), dropped 9 (+8)"
    )


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    name, version = done.stdout.split()
    assert name == "procsmith" and version[0].isdigit()
