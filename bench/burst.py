"""Issue #5, part 4: 10,000 new workspace processes at once, on a fake tree.

The 10,000 are written aside first, then moved into the tree the running pipeline (default
config) scans, one rename each (about a tenth of a second for all). Each has a command line
the bundled rules flag, so each judged makes one line in enforce's output: the time until
all are judged is from the first rename to the last of them seen there, and what has no line
by the deadline is counted as lost. A line seen twice is a process judged again (the
at-least-once delivery of D7 re-offers what the LRU no longer holds).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.runs import MINER_ARGV0, Findings, pipeline_env, scrape, wait_rounds
from bench.table import Row, Table
from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline

BURST = 10_000
FIRST_PID = 1000
DEADLINE = 60.0


@dataclass(frozen=True)
class Burst:
    label: str
    seconds: float | None  # until all were judged; None if some never were
    judged: int
    lines: int  # findings written, repeats included
    rounds: float
    dropped_by_filter: float


def staged(root: Path) -> FakeProcfs:
    fs = FakeProcfs(root)
    for pid in range(FIRST_PID, FIRST_PID + BURST):
        fs.add(pid, 11, [MINER_ARGV0, "--burst", str(pid)], exe="miner")
    return fs


def burst(label: str, workdir: Path, **config: str) -> Burst:
    live = FakeProcfs(workdir / "proc", atomic=True)
    live.add(1, 0, ["/sbin/init"], exe="init")
    live.workspace(10, 11, workspace_id="bench-burst")
    stage = staged(workdir / "stage" / "proc")
    output = workdir / "findings.jsonl"
    want = set(range(FIRST_PID, FIRST_PID + BURST))
    with Pipeline(live.root, pipeline_env(output, **config)) as pipe:
        before = wait_rounds(pipe, 1)
        findings = Findings(output)
        start = time.monotonic()
        for name in os.listdir(stage.root):
            os.rename(stage.root / name, live.root / name)
        all_judged = findings.wait(want, DEADLINE, every=0.02)
        after = scrape(pipe)
    judged = want & findings.first_seen.keys()
    dropped = "procsmith_stage_records_dropped_total"
    return Burst(
        label=label,
        seconds=max(findings.first_seen[p] for p in want) - start if all_judged else None,
        judged=len(judged),
        lines=findings.lines,
        rounds=after.get("procsmith_rounds_total") - before.get("procsmith_rounds_total"),
        dropped_by_filter=after.get(dropped, stage="filter") - before.get(dropped, stage="filter"),
    )


def report(table: Table, b: Burst) -> None:
    section = f"4. burst: {BURST:,} new workspace processes at once (fake tree)"
    took = f"{b.seconds:.2f} s" if b.seconds is not None else f"not within {DEADLINE:g} s"
    table.add(Row(section, f"{b.label}: time until all are judged ({b.rounds:g} rounds)", took))
    lost = BURST - b.judged
    table.add(Row(section, f"{b.label}: records lost (no finding within {DEADLINE:g} s)",
                  f"{lost:,}", f"{BURST:,} processes", f"{lost / BURST:.1%}", "0",
                  lost == 0))  # fmt: skip
    table.add(Row(section, f"{b.label}: findings written (repeats: {b.lines - b.judged:,}); "
                  f"filter dropped {b.dropped_by_filter:,.0f}", f"{b.lines:,}"))  # fmt: skip


def run(table: Table, variants: dict[str, dict[str, str]]) -> None:
    for label, config in variants.items():
        workdir = Path(tempfile.mkdtemp(prefix="procsmith-bench-burst-"))
        try:
            report(table, burst(label, workdir, **config))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
