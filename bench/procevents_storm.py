"""What reading process events costs under a fork storm (a measurement, not a test).

    python -m bench.procevents_storm [--rate 2000] [--seconds 10] [--read-exec]

A reader process subscribes to the connector and parses every event (with ``--read-exec`` it
also reads each exec'd process and pins its executable, as the event stage will, releasing
the pin at once as a judgement would). Meanwhile ``bench/execstorm.c`` spawns ``/bin/true``
at the given rate, bounded in count and time. Printed: the storm's real rate, events/s the
reader parsed, lost markers and the kernel's drop count, and the reader's CPU as % of one
core (utime + stime from /proc/<pid>/stat over the storm). Needs root and gcc.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from stages.cnproc import Exec
from stages.execread import ExecReader
from stages.pins import PinnedExecutables
from stages.procevents import RCVBUF_BYTES, Unavailable, subscribe

_STORM_SRC = Path(__file__).with_name("execstorm.c")


def reader(read_exec: bool, rcvbuf: int) -> int:
    """Parse events until stdin closes; print what was seen as one JSON line."""
    source = subscribe(rcvbuf=rcvbuf)
    if isinstance(source, Unavailable):
        print(json.dumps({"unavailable": source.reason, "detail": source.detail}), flush=True)
        return 1
    pins = PinnedExecutables()
    exec_reader = ExecReader("/proc", pins)
    kinds: Counter[str] = Counter()
    read_ok = 0
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([source, sys.stdin], [], [], 1.0)
        if sys.stdin in ready and not sys.stdin.readline():
            break
        for event in source.read():
            kinds[type(event).__name__] += 1
            if read_exec and isinstance(event, Exec) and event.pid == event.tgid:
                record = exec_reader.read(event.pid, event.ts)
                if record is not None:
                    read_ok += 1
                    pins.release((record.pid, record.starttime))
    figures = {
        "kinds": dict(kinds),
        "lost": source.lost,
        "kernel_drops": source.dropped(),
        "skipped": dict(source.skipped),
        "exec_read": read_ok,
        "exec_skipped": dict(exec_reader.skipped),
    }
    print(json.dumps(figures), flush=True)
    return 0


def cpu_ticks(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15


def build_storm(directory: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("needs gcc")
    out = os.path.join(directory, "execstorm")
    subprocess.run([gcc, "-O2", "-Wall", "-o", out, str(_STORM_SRC)], check=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--read-exec", action="store_true")
    parser.add_argument("--spawners", type=int, default=2, help="storm processes sharing the rate")
    parser.add_argument("--rcvbuf", type=int, default=RCVBUF_BYTES, help="socket buffer, bytes")
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        return reader(args.read_exec, args.rcvbuf)
    with tempfile.TemporaryDirectory(prefix="procsmith-storm-") as tmp:
        storm = build_storm(tmp)
        command = [sys.executable, "-m", "bench.procevents_storm", "--reader"]
        command += ["--rcvbuf", str(args.rcvbuf)]
        child = subprocess.Popen(
            command + (["--read-exec"] if args.read_exec else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        first = child.stdout.readline().strip()
        if first != "ready":
            print(first)
            return 1
        ticks, started = cpu_ticks(child.pid), time.monotonic()
        share = str(args.rate / args.spawners)
        storms = [
            subprocess.Popen([storm, share, str(args.seconds)], stdout=subprocess.PIPE, text=True)
            for _ in range(args.spawners)
        ]
        results = [s.communicate()[0].split() for s in storms]
        time.sleep(0.5)  # let the reader drain what is queued
        used = (cpu_ticks(child.pid) - ticks) / os.sysconf("SC_CLK_TCK")
        elapsed = time.monotonic() - started
        child.stdin.close()
        figures = json.loads(child.stdout.readline())
        child.wait()
    spawned = sum(int(n) for n, _ in results)
    storm_seconds = max(float(t) for _, t in results)
    events = sum(figures["kinds"].values())
    print(
        f"storm: {spawned} execs of /bin/true in {storm_seconds:.1f} s by {args.spawners} "
        f"spawners ({spawned / storm_seconds:.0f}/s, asked {args.rate:.0f}/s)"
    )
    print(f"reader: {events / elapsed:.0f} events/s parsed ({figures['kinds']})")
    print(
        f"lost markers: {figures['lost']}, kernel drops: {figures['kernel_drops']}, "
        f"skipped: {figures['skipped']}"
    )
    if args.read_exec:
        print(f"read at exec: {figures['exec_read']}, skipped {figures['exec_skipped']}")
    print(f"reader CPU: {100 * used / elapsed:.1f} % of one core over {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
