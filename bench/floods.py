"""The floods of issue 13, full size: ``python -m bench.floods [--only NAME]``.

Each runs ``procsmith run`` (scan interval 1 s) on a fake procfs in /dev/shm with two
workspaces: one floods, the other starts stand-in miners once the flood is being scanned.
Printed per flood: seconds and rounds until every miner was found, each stage's peak RSS,
what /healthz said, and the counters that show what the flood cost.

- ``argv``: 200 processes x 300 KiB argv (the RSS figures the README's bound is checked on).
- ``blinding``: 1,050 processes x 300 KiB argv, all on even pids (one shard), miners on an
  even and an odd pid.
- ``rescan``: 150 processes of a 128 MiB executable whose mtime changes every 20 ms.
- ``forks``: 2,000 processes of a 20 MB executable whose mtime changes every 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from simulation.fakeproc import FakeProcfs
from simulation.floods import MINER_ARGV, Toucher, argv_flood, peak_rss, rescan_flood, shm_procfs
from simulation.harness import Pipeline, wait_until

MiB = 1 << 20
ENV = {"PROCSMITH_SCAN__INTERVAL": "1s", "PROCSMITH_TREE__GRACE": "1s"}
COUNTERS = (
    "procsmith_stage_input_disconnects_total",
    "procsmith_scan_truncated_total",
    "procsmith_match_exe_scans_total",
    "procsmith_stage_records_dropped_total",
    "procsmith_tree_missing_shards_total",
)


def found(out: Path) -> set[int]:
    if not out.exists():
        return set()
    return {orjson.loads(line)["process"]["pid"] for line in out.read_bytes().splitlines()}


def run_flood(name: str, build: Callable[[FakeProcfs], Path | None], miners: list[int]) -> None:
    with shm_procfs() as fs:
        fs.workspace(10, 11, workspace_id="flood")
        fs.workspace(20, 21, workspace_id="victim")
        start = time.monotonic()
        touched = build(fs)
        built = time.monotonic() - start
        toucher = Toucher(touched) if touched is not None else None
        if toucher is not None:
            toucher.__enter__()
        try:
            with Pipeline(fs.root, ENV) as pipe:
                pipe.wait_flowing(2)
                rounds = pipe.metrics().get("procsmith_rounds_total")
                t0 = time.monotonic()
                for pid in miners:
                    fs.add(pid, 21, MINER_ARGV)
                try:
                    wait_until("the miners", lambda: found(pipe.out) >= set(miners), 300)
                    took = f"{time.monotonic() - t0:.1f} s"
                except AssertionError:
                    took = "NOT FOUND in 300 s"
                m = pipe.metrics()
                status, body = pipe.health()
                peaks = {
                    label: peak_rss(pid) // MiB for label, pid in sorted(pipe.children().items())
                }
        finally:
            if toucher is not None:
                toucher.__exit__(None, None, None)
    print(f"{name}: tree built in {built:.0f} s; miners {miners} found after {took}, ", end="")
    print(f"{m.get('procsmith_rounds_total') - rounds:.0f} rounds")
    print(f"  /healthz {status}: {body.strip()}")
    print(f"  peak RSS (MiB): {peaks}")
    counts = {
        (n.removeprefix("procsmith_"), dict(labels).get("stage") or dict(labels).get("file", "")): v
        for (n, labels), v in m.samples.items()
        if n in COUNTERS and v
    }
    print(f"  counters: {counts}")


def many_argv(count: int, even: bool) -> Callable[[FakeProcfs], Path | None]:
    def build(fs: FakeProcfs) -> Path | None:
        argv_flood(fs, 11, count, 300 * 1024, first=1000, even=even)
        return None

    return build


def many_rescans(count: int, exe_bytes: int) -> Callable[[FakeProcfs], Path | None]:
    def build(fs: FakeProcfs) -> Path | None:
        return rescan_flood(fs, 11, count, exe_bytes, first=1000)

    return build


FLOODS: dict[str, tuple[Callable[[FakeProcfs], Path | None], list[int]]] = {
    "argv": (many_argv(200, even=False), [30]),
    "blinding": (many_argv(1050, even=True), [30, 31]),
    "rescan": (many_rescans(150, 128 * MiB), [30]),
    "forks": (many_rescans(2000, 20 * MiB), [30]),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floods")
    parser.add_argument("--only", choices=sorted(FLOODS), action="append")
    args = parser.parse_args(argv)
    for name in args.only or list(FLOODS):
        build, miners = FLOODS[name]
        run_flood(name, build, miners)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
