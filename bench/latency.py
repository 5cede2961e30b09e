"""Issue #5, parts 2 and 5: detection latency on the real /proc, and the pipeline's memory.

``procsmith run`` with the default config (scan interval 1 s, then the default 2 s) runs on
this machine while 2,000 extra sleeping processes are on it. A simulated workspace
(``simulation.workspace``) holds a spawner that starts a flagged process at random moments
and notes when each started (CLOCK_MONOTONIC, as this process reads it). A process's latency
is from then to its finding's line appearing in enforce's output, polled every 5 ms. The
memory of every stage process is read from smaps_rollup during the 2 s run, after its
samples, while the workspace is still there.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.runs import (
    MINER_ARGV0,
    Findings,
    StageMemory,
    cpu_seconds_of,
    pipeline_env,
    pipeline_memory,
    pipeline_processes,
    wait_rounds,
)
from bench.table import Row, Table
from simulation.harness import Pipeline
from simulation.sleepers import Sleepers
from simulation.workspace import SimNode, SimulatedTree, workspace

SAMPLES = 120  # processes per interval: p99 is then the second-largest
RATE = 8.0  # processes started per second, on average
PSS_TARGET = 120 * 2**20
SLEEPERS = 2000

# Starts ``count`` flagged `sleep`s at uniformly random gaps (mean 1/rate) and appends
# "pid started" for each to the report; then waits to be ended with its workspace.
_SPAWNER = """
import os, random, sys, time
report, count, rate, sleep, argv0 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:]
with open(report, "a") as out:
    for i in range(count):
        time.sleep(random.uniform(0, 2 / rate))
        pid = os.posix_spawn(sleep, [argv0, "600"], {})
        out.write(f"{pid} {time.monotonic()}\\n")
        out.flush()
while True:
    time.sleep(3600)
"""


@dataclass(frozen=True)
class Latency:
    interval: float
    seconds: list[float]
    missed: int  # spawned processes with no finding within the wait


def spawned(report: Path) -> dict[int, float]:
    out = {}
    for line in report.read_text().splitlines():
        pid, started = line.split()
        out[int(pid)] = float(started)
    return out


def measure(interval: float, workdir: Path) -> tuple[Latency, list[StageMemory]]:
    output, report = workdir / f"findings-{interval:g}s.jsonl", workdir / f"spawned-{interval:g}"
    report.touch()
    env = pipeline_env(output, SCAN__INTERVAL=f"{interval:g}s")
    with Pipeline("/proc", env) as pipe:
        wait_rounds(pipe, 1)
        findings = Findings(output)
        sleep = shutil.which("sleep") or "/bin/sleep"
        argv = ["python3", "-c", _SPAWNER, str(report), str(SAMPLES), str(RATE), sleep]
        spawner = SimNode("spawner", [*argv, MINER_ARGV0], executable=sys.executable)
        with SimulatedTree(workspace([spawner], workspace_id="bench-latency")):
            processes = pipeline_processes(pipe)
            cpu_before, since = cpu_seconds_of(processes), time.monotonic()
            deadline = since + 3 * SAMPLES / RATE
            while len(started := spawned(report)) < SAMPLES and time.monotonic() < deadline:
                findings.poll()
                time.sleep(0.005)
            findings.wait(set(started), timeout=3 * interval + 5)
            cpu_after, window = cpu_seconds_of(processes), time.monotonic() - since
            cpu = {k: (cpu_after[k] - cpu_before[k]) / window for k in processes}
            memory = pipeline_memory(pipe, cpu)
    seen = {pid: findings.first_seen[pid] - t for pid, t in started.items()
            if pid in findings.first_seen}  # fmt: skip
    return Latency(interval, sorted(seen.values()), len(started) - len(seen)), memory


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, max(0, round(q * len(sorted_xs)) - 1))]


def report_latency(table: Table, lat: Latency) -> None:
    section = "2. detection latency, real /proc: new process -> its finding written by enforce"
    p50, p99 = percentile(lat.seconds, 0.50), percentile(lat.seconds, 0.99)
    where = f"interval {lat.interval:g} s"
    table.add(Row(section, f"p50, {where} ({len(lat.seconds)} processes)", f"{p50:.3f} s",
                  "scan interval", f"{p50 / lat.interval:.2f}x"))  # fmt: skip
    table.add(Row(section, f"p99, {where}", f"{p99:.3f} s", "scan interval",
                  f"{p99 / lat.interval:.2f}x"))  # fmt: skip
    table.add(Row(section, f"max, {where}; without a finding: {lat.missed}",
                  f"{lat.seconds[-1]:.3f} s" if lat.seconds else "n/a", "scan interval",
                  f"{lat.seconds[-1] / lat.interval:.2f}x" if lat.seconds else "",
                  "all found", lat.missed == 0))  # fmt: skip


def report_memory(table: Table, memory: list[StageMemory], kernel_per_fd: float | None) -> None:
    section = (
        "5. memory of the default pipeline (real /proc, 2,000 extra processes, 2 s interval, "
        f"{RATE:g} new processes/s); CPU is the share of one core meanwhile"
    )
    for m in memory:
        extra = f"; {m.stat_fds:,} stat fds kept" if m.stat_fds else ""
        table.add(Row(section, f"{m.label}: RSS {m.rss / 2**20:.1f} MiB, CPU {m.cpu:.1%}{extra}",
                      f"PSS {m.pss / 2**20:.1f} MiB"))  # fmt: skip
    pss = sum(m.pss for m in memory)
    table.add(Row(section, f"whole pipeline ({len(memory)} processes): RSS "
                  f"{sum(m.rss for m in memory) / 2**20:.1f} MiB, "
                  f"CPU {sum(m.cpu for m in memory):.1%}",
                  f"PSS {pss / 2**20:.1f} MiB", "120 MiB", f"{pss / PSS_TARGET:.2f}x",
                  "<= 1.0x", pss <= PSS_TARGET))  # fmt: skip
    fds = sum(m.stat_fds for m in memory)
    if kernel_per_fd is not None and fds:
        table.add(Row(section, f"kernel memory of the {fds:,} kept stat fds (not in PSS)",
                      f"{fds * kernel_per_fd / 2**20:.1f} MiB"))  # fmt: skip


def run(table: Table, kernel_per_fd: float | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="procsmith-bench-latency-"))
    try:
        with Sleepers(SLEEPERS):
            results = [measure(interval, workdir) for interval in (1.0, 2.0)]
        for lat, _ in results:
            report_latency(table, lat)
        report_memory(table, results[-1][1], kernel_per_fd)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
