"""Workspaces that try to blind the node, on fake procfs trees (issue 13).

``argv_flood`` fills a workspace with processes carrying huge argv (optionally all on even
pids, so one scan shard gets them all); ``rescan_flood`` gives a workspace many processes of
one large executable, and ``Toucher`` keeps changing that executable's mtime so that every
one of them misses match's verdict cache. ``peak_rss`` reads a process's high-water mark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from simulation.fakeproc import FakeProcfs

MINER_ARGV = ["./xmrig", "-o", "pool.example.invalid:3333"]


@contextlib.contextmanager
def shm_procfs() -> Iterator[FakeProcfs]:
    """A fake procfs in /dev/shm (RAM; a flood's files are written fast), removed after."""
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private directory in it
    base = Path(tempfile.mkdtemp(dir=shm if os.access(shm, os.W_OK) else None))
    try:
        fs = FakeProcfs(base / "proc", atomic=True)
        fs.add(1, 0, ["/sbin/init"])
        yield fs
    finally:
        shutil.rmtree(base, ignore_errors=True)


def argv_flood(
    fs: FakeProcfs, parent: int, count: int, argv_bytes: int, *, first: int, even: bool
) -> list[int]:
    """``count`` processes under ``parent``, each with ``argv_bytes`` of argv."""
    pids: list[int] = []
    pid = first
    filler = "x" * argv_bytes
    while len(pids) < count:
        if not even or pid % 2 == 0:
            fs.add(pid, parent, ["node", filler, str(pid)])
            pids.append(pid)
        pid += 1
    return pids


def rescan_flood(fs: FakeProcfs, parent: int, count: int, exe_bytes: int, *, first: int) -> Path:
    """``count`` processes under ``parent`` of one executable of ``exe_bytes``; returns it."""
    exe = fs.bin / "big-tool"
    with exe.open("wb") as f:
        f.write(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * (exe_bytes // 256))
    for pid in range(first, first + count):
        fs.add(pid, parent, ["big-tool", str(pid)], exe="big-tool")
    return exe


class Toucher:
    """Changes ``path``'s mtime every ``every`` seconds, in a thread, until closed."""

    def __init__(self, path: Path, every: float = 0.02) -> None:
        self.path = path
        self.every = every
        self.touches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t = 1_000_000_000
        while not self._stop.wait(self.every):
            t += 1
            os.utime(self.path, (t, t))
            self.touches += 1

    def __enter__(self) -> Toucher:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)


def peak_rss(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f.read(8192).splitlines():
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
