"""Issue #5, part 1: scan cost per process, against the Python floor, psutil and the C floor.

On the real /proc with 2,000 extra sleeping processes, and on fake trees of 10,000 and 50,000
processes. procsmith's first round is a fresh ``ShardReader``'s first ``read``. Its steady
state is one long-lived reader's rounds with nothing new on the tree, after its first round,
averaged over blocks of ``RECHECK_EVERY`` rounds (each process is re-read in full once in
every such block, at its own random phase, so each block carries exactly its share). All in CPU
time of the process measuring; each figure is the best of the same number of repetitions,
interleaved with those of its references (this VM's noise only ever adds: another tenant's
work shows up as stolen time in every clock).
"""

from __future__ import annotations

import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.floors import (
    CFloor,
    cpu_seconds,
    fake_boot_time,
    psutil_forget,
    psutil_scan,
    python_floor,
)
from bench.table import Row, Table, ratio
from simulation.faketree import node_tree
from simulation.sleepers import Sleepers
from stages.base.meter import Tally
from stages.shardreader import RECHECK_EVERY, ShardReader

SLEEPERS = 2000
FAKE_SIZES = (10_000, 50_000)
FIRST_TARGET, STEADY_TARGET, STEADY_C_TARGET = 1.2, 0.5, 2.0


@dataclass(frozen=True)
class ScanFigures:
    processes: int
    python: float  # CPU µs per process, the best repetition
    psutil: float
    c: float | None
    first: float
    second: float
    steady: float
    kept_open: int  # stat descriptors the steady reader kept


def measure(root: str, reps: int, cfloor: CFloor) -> ScanFigures:
    n = python_floor(root)  # also warms the kernel's caches for everyone
    psutil_forget()
    psutil_scan(root)  # psutil as a loop agent runs it: its Process cache filled
    samples: dict[str, list[float]] = {
        name: [] for name in ("python", "psutil", "first", "second", "steady")
    }
    for _ in range(reps):
        gc.collect()
        samples["python"].append(cpu_seconds(python_floor, root))
        samples["psutil"].append(cpu_seconds(psutil_scan, root))
        first = ShardReader(root, Tally())
        samples["first"].append(cpu_seconds(first.read, 1))
        samples["second"].append(cpu_seconds(first.read, 2))  # opens the fds it keeps
        first.close()
    psutil_forget()
    steady = ShardReader(root, Tally())
    steady.read(0)
    steady.read(0)  # its descriptors opened: from now on, only checks and due re-reads
    for _ in range(reps):
        gc.collect()
        samples["python"].append(cpu_seconds(python_floor, root))
        block = [cpu_seconds(steady.read, 0) for _ in range(RECHECK_EVERY)]
        samples["steady"].append(statistics.mean(block))
    kept = steady.open_descriptors
    steady.close()
    c_passes = cfloor.passes(root, 2 * reps)

    def per_process(xs: list[float]) -> float:
        return min(xs) / n * 1e6

    return ScanFigures(
        processes=n,
        python=per_process(samples["python"]),
        psutil=per_process(samples["psutil"]),
        c=per_process([s for _, s in c_passes]) if c_passes else None,
        first=per_process(samples["first"]),
        second=per_process(samples["second"]),
        steady=per_process(samples["steady"]),
        kept_open=kept,
    )


def report(table: Table, label: str, f: ScanFigures, cfloor: CFloor) -> None:
    section = f"1. scan cost, CPU µs per process: {label} ({f.processes:,} processes)"

    def us(x: float) -> str:
        return f"{x:.2f} µs"

    table.add(Row(section, "Python floor: os.open/os.read of stat and cmdline", us(f.python)))
    c_text = us(f.c) if f.c is not None else f"n/a ({cfloor.problem})"
    table.add(Row(section, "C floor: openat+read of stat and cmdline (gcc -O2)", c_text))
    r, _ = ratio(f.psutil, f.python)
    table.add(Row(section, "psutil.process_iter(pid, ppid, create_time, cmdline)", us(f.psutil),
                  "Python floor", r))  # fmt: skip
    r, met = ratio(f.first, f.python, FIRST_TARGET)
    table.add(Row(section, "procsmith first round", us(f.first), "Python floor", r,
                  f"<= {FIRST_TARGET}x", met))  # fmt: skip
    r, _ = ratio(f.second, f.python)
    table.add(Row(section, "procsmith second round (opens the stat fds it keeps)",
                  us(f.second), "Python floor", r))  # fmt: skip
    r, met = ratio(f.steady, f.python, STEADY_TARGET)
    table.add(Row(section, f"procsmith steady round ({f.kept_open:,} stat fds kept)",
                  us(f.steady), "Python floor", r, f"<= {STEADY_TARGET}x", met))  # fmt: skip
    if f.c is not None:
        r, met = ratio(f.steady, f.c, STEADY_C_TARGET)
        table.add(Row(section, "procsmith steady round", us(f.steady), "C floor", r,
                      f"<= {STEADY_C_TARGET}x", met))  # fmt: skip


_HOLDING = """
import gc, os, sys
from stages.base.meter import Tally
from stages.shardreader import ShardReader
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
gc.collect(); before = rss()
reader = ShardReader(sys.argv[1], Tally())
scan = reader.read(1)
scan = reader.read(2)
del scan
gc.collect()
print(rss() - before, len(reader))
"""


def kernel_bytes_per_fd(root: str) -> float:
    """Unreclaimable kernel memory per kept stat descriptor (procfs holds a page-sized buffer
    for each from its first read until it is closed): the median of three readers, over the
    second round, where a reader opens the descriptors it keeps."""
    per_fd = []
    for _ in range(3):
        gc.collect()
        reader = ShardReader(root, Tally())
        reader.read(1)
        before = _unreclaimable()
        reader.read(2)
        grown = _unreclaimable() - before
        per_fd.append(grown / max(1, reader.open_descriptors))
        reader.close()
    return statistics.median(per_fd)


def _unreclaimable() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("SUnreclaim:"):
                return int(line.split()[1]) * 1024
    return 0


def reader_memory(root: str) -> tuple[int, int]:
    """RSS a fresh process grows by to remember every process of ``root`` (bytes, processes)."""
    out = subprocess.run(
        [sys.executable, "-c", _HOLDING, root], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def run(table: Table) -> float:
    """Adds the figures; returns the kernel memory per kept stat descriptor (bytes)."""
    cfloor = CFloor()
    try:
        label = f"real /proc with {SLEEPERS:,} extra sleeping processes"
        with Sleepers(SLEEPERS):
            f = measure("/proc", reps=9, cfloor=cfloor)
            per_fd = kernel_bytes_per_fd("/proc")
        report(table, label, f, cfloor)
        table.add(Row(f"1. scan cost, CPU µs per process: {label} ({f.processes:,} processes)",
                      "kernel memory per kept stat fd (SUnreclaim growth)",
                      f"{per_fd / 1024:.1f} KiB"))  # fmt: skip
        for size in FAKE_SIZES:
            workdir = Path(tempfile.mkdtemp(prefix="procsmith-bench-tree-"))
            try:
                fs = node_tree(workdir / "proc", size)
                fake_boot_time(fs.root)
                f = measure(str(fs.root), reps=7 if size <= 10_000 else 3, cfloor=cfloor)
                report(table, f"fake tree of {size:,}", f, cfloor)
                if size == max(FAKE_SIZES):
                    grown, held = reader_memory(str(fs.root))
                    table.add(Row(f"1. scan cost, CPU µs per process: fake tree of {size:,}",
                                  f"memory a reader holds for {held:,} processes (RSS growth)",
                                  f"{grown / 2**20:.1f} MiB", "",
                                  f"{grown / held:.0f} B/process"))  # fmt: skip
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        cfloor.close()
    return per_fd
