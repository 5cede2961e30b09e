"""Where a scan's time goes, step by step (bench/README.md, "What the profile shows").

    python -m bench.profile_scan [--sleepers 2000] [--reps 9]

On the real /proc with extra sleeping processes, each line adds one piece of work to the line
before, so the difference between two lines is what that piece costs per process: from the
bare listing, through the Python floor, to procsmith's first round; then its steady round,
without and with its periodic full re-reads. CPU µs per process, best of ``--reps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from bench.floors import cpu_seconds, python_floor
from simulation.sleepers import Sleepers
from stages.base.meter import Tally
from stages.procfs import OPEN_FLAGS, list_pids, parse_cmdline
from stages.shardreader import RECHECK_EVERY, ShardReader
from stages.statline import parse_stat


def _read(path: str) -> bytes:
    fd = os.open(path, OPEN_FLAGS)
    try:
        return os.read(fd, 4097)
    finally:
        os.close(fd)


def floor_and_exe(root: str) -> None:
    for pid in list_pids(root):
        base = f"{root}/{pid}/"
        try:
            _read(base + "stat")
            _read(base + "cmdline")
            os.stat(base + "exe")
        except OSError:
            continue


def floor_exe_parse(root: str) -> None:
    for pid in list_pids(root):
        base = f"{root}/{pid}/"
        try:
            parse_stat(_read(base + "stat"))
            parse_cmdline(_read(base + "cmdline"))
            os.stat(base + "exe")
        except OSError:
            continue


def first_round(root: str) -> None:
    reader = ShardReader(root, Tally())
    reader.read(1)
    reader.close()


def second_round(root: str) -> float:
    """CPU seconds of a reader's second round alone."""
    reader = ShardReader(root, Tally())
    reader.read(1)
    seconds = cpu_seconds(reader.read, 2)
    reader.close()
    return seconds


def steady(root: str, recheck: int) -> Callable[[str], float]:
    """CPU seconds of one round of a long-lived reader, averaged over ``RECHECK_EVERY``."""
    reader = ShardReader(root, Tally(), recheck_every=recheck)
    reader.read(0)
    return lambda _: sum(cpu_seconds(reader.read, 0) for _ in range(RECHECK_EVERY)) / RECHECK_EVERY


def timed(step: Callable[[str], object]) -> Callable[[str], float]:
    return lambda root: cpu_seconds(step, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_scan")
    parser.add_argument("--sleepers", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args(argv)
    root = "/proc"
    with Sleepers(args.sleepers):
        n = len(list_pids(root))
        steps: list[tuple[str, Callable[[str], float]]] = [
            ("listing only (os.listdir, pids filtered and sorted)", timed(list_pids)),
            ("+ open/read/close stat and cmdline: the Python floor", timed(python_floor)),
            ("+ os.stat of exe (the D8 key)", timed(floor_and_exe)),
            ("+ parse stat and cmdline", timed(floor_exe_parse)),
            ("procsmith first round (+ records and the cache)", timed(first_round)),
            ("procsmith second round (+ opening the stat fds it keeps)", second_round),
            ("procsmith steady, no full re-reads (pread + compare)", steady(root, 10**9)),
            (
                "procsmith steady, full re-read every 15 rounds (default)",
                steady(root, RECHECK_EVERY),
            ),
        ]
        best = {name: float("inf") for name, _ in steps}
        for _ in range(args.reps):  # interleaved: a slow moment costs every step alike
            for name, measure in steps:
                best[name] = min(best[name], measure(root))
    print(f"{n:,} processes on /proc; CPU µs per process, best of {args.reps}")
    for name, _ in steps:
        print(f"  {best[name] / n * 1e6:6.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
