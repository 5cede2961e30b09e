"""Stage processes a previous supervisor left behind, cleared before a new one binds.

A stage that is stopped (SIGSTOP) when its supervisor is SIGKILLed never acts on the
SIGTERM the kernel sends it on its parent's death, and keeps its sockets. So the supervisor
lists its children in ``stages.pids`` in the run directory (pid and start time, rewritten
at each start), and the next supervisor to hold the run directory's lock SIGKILLs those
still alive with the same start time: only its own kind, never a reused pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from stages.procfs import is_running, read_stat
from stages.statline import parse_stat

PIDS_FILE = "stages.pids"
_MAX_BYTES = 64 * 1024  # far more than 64 shards, 64 replicas and 4 others need
_GONE_WAIT = 5.0  # how long a SIGKILLed leftover may take to disappear


def starttime_of(pid: int) -> int | None:
    """The start time of a live process (a zombie counts as gone), else None."""
    try:
        stat = parse_stat(read_stat(f"/proc/{pid}/stat"))
    except OSError:
        return None
    if stat is None or not is_running(pid):
        return None
    return stat.starttime


def record(run_dir: Path, pids: Iterable[int]) -> None:
    """Write the children's pids and start times (aside, then renamed: never half a file)."""
    lines = [f"{pid} {st}\n" for pid in pids if (st := starttime_of(pid)) is not None]
    pending = run_dir / (PIDS_FILE + ".new")
    pending.write_text("".join(lines))
    pending.rename(run_dir / PIDS_FILE)


def clear(run_dir: Path) -> list[int]:
    """SIGKILL the live processes ``stages.pids`` names; returns their pids once gone."""
    path = run_dir / PIDS_FILE
    try:
        with path.open("rb") as f:
            text = f.read(_MAX_BYTES).decode("ascii", "replace")
    except FileNotFoundError:
        return []
    killed = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            continue
        pid, started = int(parts[0]), int(parts[1])
        if pid <= 1 or pid == os.getpid() or starttime_of(pid) != started:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # works on a stopped process too
            killed.append(pid)
    deadline = time.monotonic() + _GONE_WAIT
    while any(starttime_of(p) is not None for p in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    path.unlink(missing_ok=True)
    return killed
