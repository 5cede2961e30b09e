"""Issue #11: what reading what a process runs costs, per process, against its reference.

    python -m bench.judge_cost [--processes 100] [--reps 7]

On the real /proc, with ``--processes`` each of two kinds started for the run: ``sleep``
(a small C program: its libc and loader mapped) and ``python3 script.py`` (a script file,
the interpreter's dozens of mappings). CPU µs per process, best of ``--reps``:

- scan: reading and digesting ``/proc/<pid>/maps`` (what a full re-read adds when it reads
  them), against the Python floor (open/read/close of stat and cmdline) of the same processes;
- match, every verdict cached (a node runs few distinct files, so this is the common case):
  ``Matcher.judge`` with the mappings and the script judged, against the same with only the
  executable (``max_mappings=0``, no interpreters), as match judged before issue 11.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.floors import cpu_seconds
from bench.table import Row, Table
from pipeline.configschema import Config
from stages.base.meter import Tally
from stages.base.schema import Kind, Process
from stages.classify import process_record
from stages.execview import maps_digest, read_maps
from stages.match import Matcher
from stages.procfs import OPEN_FLAGS
from stages.shardreader import ShardReader
from stages.signatures import load_signatures

SCRIPT = "import time\ntime.sleep(600)\n"


@contextmanager
def started(n: int, workdir: Path) -> Iterator[dict[str, list[int]]]:
    """``n`` sleeps and ``n`` python scripts, ended on leaving."""
    script = workdir / "idle.py"
    script.write_text(SCRIPT)
    children = {
        "sleep": [subprocess.Popen(["sleep", "600"]) for _ in range(n)],
        "python script": [
            subprocess.Popen([sys.executable, str(script)], cwd=workdir) for _ in range(n)
        ],
    }
    try:
        time.sleep(1.0)  # loaded: their maps are what they will stay
        yield {kind: [c.pid for c in procs] for kind, procs in children.items()}
    finally:
        for procs in children.values():
            for c in procs:
                c.kill()
                c.wait()


def floor(pids: list[int]) -> None:
    for pid in pids:
        for name in ("stat", "cmdline"):
            fd = os.open(f"/proc/{pid}/{name}", OPEN_FLAGS)
            try:
                os.read(fd, 4096)
            finally:
                os.close(fd)


def maps(pids: list[int]) -> None:
    for pid in pids:
        maps_digest(read_maps(f"/proc/{pid}/")[0])


def records(pids: list[int]) -> list[Process]:
    wanted = set(pids)
    raw = [p for p in ShardReader("/proc", Tally()).read(1).procs if p.pid in wanted]
    return [process_record(p, Kind.USER_WORKLOAD, None, "/proc") for p in raw]


def judging(matcher: Matcher, procs: list[Process]) -> Callable[[], None]:
    def run() -> None:
        for proc in procs:
            matcher.judge(proc)

    run()  # every verdict cached from here on
    return run


def best(run: Callable[..., object], reps: int, *args: object) -> float:
    return min(cpu_seconds(run, *args) for _ in range(reps))


def run(table: Table, processes: int = 100, reps: int = 7) -> None:
    section = f"judging what runs, real /proc ({processes} processes of each kind; CPU per process)"
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    whole = Matcher(signatures, Tally(), max_exe_bytes=128 << 20, cache_size=4096)
    exe_only = Matcher(
        signatures,
        Tally(),
        max_exe_bytes=128 << 20,
        cache_size=4096,
        max_mappings=0,
        interpreters=(),
    )
    with (
        tempfile.TemporaryDirectory(prefix="procsmith-judge-") as d,
        started(processes, Path(d)) as kinds,
    ):
        for kind, pids in kinds.items():
            procs = records(pids)
            n = len(procs)
            floor_s, maps_s = best(floor, reps, pids), best(maps, reps, pids)
            base_s = best(judging(exe_only, procs), reps)
            whole_s = best(judging(whole, procs), reps)
            us = 1e6 / n
            table.add(Row(section, f"{kind}: scan, maps read and digested",
                          f"{maps_s * us:.1f} µs", "Python floor",
                          f"{maps_s / floor_s:.2f}x"))  # fmt: skip
            table.add(Row(section, f"{kind}: match, exe + mappings + script (cached)",
                          f"{whole_s * us:.1f} µs", "exe only",
                          f"{whole_s / base_s:.2f}x"))  # fmt: skip
            table.add(Row(section, f"{kind}: what that adds per process",
                          f"{(whole_s - base_s) * us:.1f} µs"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge_cost")
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    table = Table()
    run(table, args.processes, args.reps)
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
