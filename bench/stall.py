"""Issue #5, part 3: rounds keep their pace while matching is 1000 times slower.

A normal matcher's cost per process is measured here first: the bundled signatures judging
this fake tree's workloads in this process (its verdict cache warm, as in a running match).
Then the pipeline runs twice on the same tree, a workspace of ``USERS`` flagged processes:
once as it is, once with ``match.delay`` set to 1000 times that cost, which keeps match busy
for the whole window. The round rate is counted at the filter (``procsmith_rounds_total``)
between two scrapes and timed by the round-completion timestamps the filter sets, so the
window holds whole rounds only.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.floors import cpu_seconds
from bench.runs import MINER_ARGV0, pipeline_env, scrape, wait_rounds
from bench.table import Row, Table, ratio
from pipeline.builders import matcher as build_matcher
from pipeline.configschema import Config
from pipeline.local import LocalDetector
from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline
from stages.base.meter import Tally
from stages.signatures import load_signatures

USERS = 2000
INTERVAL = 0.25  # seconds: short, so that a stall of a fraction of a second shows
WINDOW = 12.0
SLOWER = 1000
RATE_TARGET = 0.05


@dataclass(frozen=True)
class RoundRate:
    per_minute: float
    dropped_by_filter: float
    judged: float  # processes match received in the window
    findings: float  # findings match wrote in the window: it was working through its queue


def tree(root: Path) -> FakeProcfs:
    fs = FakeProcfs(root, atomic=True)
    fs.add(1, 0, ["/sbin/init"], exe="init")
    fs.workspace(10, 11, workspace_id="bench-stall")
    for pid in range(100, 100 + USERS):
        fs.add(pid, 11, [MINER_ARGV0, "--stall", str(pid)], exe="miner")
    return fs


def judge_seconds(root: str) -> float:
    """CPU seconds the bundled signatures take per process of this tree, as match runs."""
    config = Config(proc_root=root)
    procs = LocalDetector(config).round()
    signatures = load_signatures([Path(p) for p in config.match.signatures])
    matcher = build_matcher(config, Tally(), signatures)
    for proc in procs[:20]:  # the executable's verdict cached, as in a running match
        matcher.judge(proc)
    return statistics.median(
        cpu_seconds(lambda: [matcher.judge(p) for p in procs]) / len(procs) for _ in range(3)
    )


def round_rate(root: Path, workdir: Path, delay: float) -> RoundRate:
    env = pipeline_env(
        workdir / f"findings-{delay:g}.jsonl",
        SCAN__INTERVAL=f"{INTERVAL * 1000:g}ms",
        TREE__GRACE="150ms",
        MATCH__DELAY=f"{delay * 1000:.3f}ms",
    )
    with Pipeline(root, env) as pipe:
        start = wait_rounds(pipe, 8)  # the first round's flood is being judged (or queued)
        time.sleep(WINDOW)
        end = scrape(pipe)
    completed = "procsmith_round_completed_timestamp_seconds"
    rounds = end.get("procsmith_rounds_total") - start.get("procsmith_rounds_total")
    seconds = end.get(completed) - start.get(completed)
    dropped = "procsmith_stage_records_dropped_total"
    judged = "procsmith_stage_records_in_total"
    found = "procsmith_match_findings_total"
    return RoundRate(
        per_minute=rounds / seconds * 60,
        dropped_by_filter=end.get(dropped, stage="filter") - start.get(dropped, stage="filter"),
        judged=end.get(judged, stage="match") - start.get(judged, stage="match"),
        findings=end.total(found) - start.total(found),
    )


def run(table: Table) -> None:
    section = (f"3. stall-freedom: fake tree, {USERS:,} workspace processes, "
               f"{INTERVAL:g} s interval, {WINDOW:g} s window")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="procsmith-bench-stall-"))
    try:
        fs = tree(workdir / "proc")
        per_process = judge_seconds(str(fs.root))
        normal = round_rate(fs.root, workdir, 0.0)
        slow = round_rate(fs.root, workdir, SLOWER * per_process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table.add(Row(section, "a normal matcher: CPU per process judged",
                  f"{per_process * 1e6:.0f} µs"))  # fmt: skip
    clock = normal.per_minute * INTERVAL / 60
    table.add(Row(section, f"rounds/min, normal matcher; match received {normal.judged:,.0f}, "
                  f"found {normal.findings:,.0f}",
                  f"{normal.per_minute:.1f}", "60 / interval", f"{clock:.3f}x"))  # fmt: skip
    change = abs(slow.per_minute - normal.per_minute) / normal.per_minute
    r, _ = ratio(slow.per_minute, normal.per_minute)
    table.add(Row(section, f"rounds/min, matcher {SLOWER}x slower "
                  f"(delay {SLOWER * per_process * 1e3:.1f} ms); "
                  f"match received {slow.judged:,.0f}, found {slow.findings:,.0f}, "
                  f"filter dropped {slow.dropped_by_filter:,.0f}",
                  f"{slow.per_minute:.1f}", "normal matcher", f"{r} ({change:.1%} change)",
                  f"<= {RATE_TARGET:.0%} change", change <= RATE_TARGET))  # fmt: skip
