"""What a scan is measured against: the Python floor, psutil, and the C floor.

Each reads the same procfs root (the real /proc or a fake tree) and each pass is timed in CPU
seconds of the process doing it (``time.process_time`` here, CLOCK_PROCESS_CPUTIME_ID in C),
so another process running meanwhile does not count against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_CFLOOR_SRC = Path(__file__).with_name("cfloor.c")


def cpu_seconds(run: Callable[..., object], *args: object) -> float:
    """CPU seconds (user and system) this process spends in ``run(*args)``."""
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def python_floor(root: str) -> int:
    """The least a Python scan can do: list the pids, os.open/os.read/os.close stat and
    cmdline of each (the first 4 KiB). Returns how many processes it read."""
    read = 0
    for name in os.listdir(root):
        if not name.isdigit():
            continue
        base = f"{root}/{name}/"
        try:
            fd = os.open(base + "stat", _FLAGS)
            try:
                os.read(fd, 4096)
            finally:
                os.close(fd)
            fd = os.open(base + "cmdline", _FLAGS)
            try:
                os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue
        read += 1
    return read


def psutil_scan(root: str) -> int:
    """``psutil.process_iter`` with pid, ppid, create_time and cmdline, as a loop agent calls
    it each round (its Process objects are cached between calls, as psutil does)."""
    psutil.PROCFS_PATH = root
    return sum(1 for _ in psutil.process_iter(["pid", "ppid", "create_time", "cmdline"]))


def psutil_forget() -> None:
    """Drop psutil's cached Process objects (before it is pointed at another root)."""
    psutil.process_iter.cache_clear()


def fake_boot_time(root: Path) -> None:
    """psutil computes create_time from the root's ``stat`` file: give a fake tree one."""
    (root / "stat").write_text("cpu  0 0 0 0 0 0 0 0 0 0\nbtime 1700000000\n")


class CFloor:
    """``bench/cfloor.c``, built once with the system gcc into a temporary directory."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="procsmith-cfloor-")
        self.binary: str | None = None
        self.problem = ""
        gcc = shutil.which("gcc")
        if gcc is None:
            self.problem = "no gcc"
            return
        out = os.path.join(self._dir, "cfloor")
        command = [gcc, "-O2", "-Wall", "-o", out, str(_CFLOOR_SRC)]
        built = subprocess.run(command, capture_output=True, text=True, check=False)
        if built.returncode != 0:
            self.problem = f"gcc failed: {built.stderr.strip()[:200]}"
            return
        self.binary = out

    def passes(self, root: str, passes: int) -> list[tuple[int, float]]:
        """(processes read, CPU seconds) of each pass; [] if it could not be built."""
        if self.binary is None:
            return []
        out = subprocess.run(
            [self.binary, root, str(passes)], capture_output=True, text=True, check=True
        ).stdout
        return [(int(n), float(s)) for n, s in (line.split() for line in out.splitlines())]

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
