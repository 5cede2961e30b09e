"""Adversarial fake procfs trees (issue #6): everything a hostile workspace, or a broken
kernel interface, could put in front of the scanner at once.

``build`` writes the tree and returns what one scan of it must count. The bulk (a deep chain
and a flat crowd of siblings) is written with raw ``os`` calls: 150,000 processes take about
two seconds on tmpfs.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from simulation.fakeproc import RING1, SUPERVISOR, FakeProcfs, env_bytes, stat_line

WORKSPACE_IDS = {
    "GITPOD_OWNER_ID": "owner",
    "GITPOD_WORKSPACE_ID": "ws-hostile",
    "GITPOD_INSTANCE_ID": "inst",
    "GITPOD_WORKSPACE_CONTEXT_URL": "https://example.com/r",
}
CHAIN_BASE = 100_000
SIBLING_BASE = 300_000


@dataclass
class Hostile:
    root: Path
    supervisor: int  # of the workspace everything hostile lives in
    # The pids each scan skips (by reason) or reads cut at a bound (by file).
    skipped: dict[str, list[int]]
    truncated: dict[str, list[int]]
    processes: int

    def explains(self, total: float, pids: list[int], shards: int = 2) -> bool:
        """Whether ``total`` counts are whole scans of these pids by each shard, the shards
        at most one round apart (metrics are read while they scan)."""
        per_shard = [sum(1 for p in pids if p % shards == k) for k in range(shards)]
        for rounds in range(1, int(total) + 1):
            for ahead in range(1 << shards):
                done = [rounds + (ahead >> k & 1) for k in range(shards)]
                if sum(n * r for n, r in zip(per_shard, done, strict=True)) == total:
                    return True
        return False


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_KTHREAD_FLAGS = 4194560 | 0x00200000  # the fake tree's usual flags, and PF_KTHREAD


def _bulk(root: Path, pids: range, parent_of: dict[int, int] | None, parent: int) -> None:
    """Processes with a stat and a cmdline only: kernel threads to match (no exe, and
    PF_KTHREAD in their flags; a user process without an exe would be an unjudgeable finding)."""
    for pid in pids:
        d = f"{root}/{pid}"
        os.mkdir(d)
        ppid = parent_of[pid] if parent_of is not None else parent
        _write(d + "/stat", stat_line(pid, "job", ppid, 1000 + pid, flags=_KTHREAD_FLAGS))
        _write(d + "/cmdline", b"job\0" + str(pid).encode() + b"\0")


def build(base: Path, *, chain: int = 100_000, siblings: int = 50_000, seed: int = 1) -> Hostile:
    rng = random.Random(seed)  # noqa: S311 - reproducible garbage, not a secret
    fs = FakeProcfs(base / "proc")
    root = fs.root
    fs.add(1, 0, ["/sbin/init"])
    # The workspace: its ring1's environment is 1 MB, the ids at its very end.
    pad = 1_000_000 - len(env_bytes(WORKSPACE_IDS)) - len(b"PAD=\0")
    fs.add(10, 1, RING1, env=b"PAD=" + b"p" * pad + b"\0" + env_bytes(WORKSPACE_IDS))
    fs.add(11, 10, SUPERVISOR)
    # A ring1 whose 3 MiB environment is cut at the 1 MiB bound: its ids are past the cut.
    fs.add(12, 1, RING1, env=b"PAD=" + b"p" * (3 << 20) + b"\0" + env_bytes(WORKSPACE_IDS))
    fs.add(13, 12, SUPERVISOR)
    skipped: dict[str, list[int]] = {"malformed_stat": [], "io_error": [], "denied": []}
    truncated: dict[str, list[int]] = {"cmdline": [], "environ": [12]}

    # Garbage: stat without a ')' (so certainly unparseable), and garbage argv and environ
    # behind valid stat lines, some of them ring1 candidates.
    for pid in range(20, 40):
        junk = bytes(b for b in rng.randbytes(rng.randint(0, 3000)) if b != ord(")"))
        fs.add(pid, 11, rng.randbytes(500), stat=junk, env=rng.randbytes(700))
        skipped["malformed_stat"].append(pid)
    for pid in range(40, 50):
        argv = b"/proc/self/exe\0ring1\0" if pid % 2 else rng.randbytes(2000)
        fs.add(pid, 11, argv, env=rng.randbytes(5000))
    fs.add(60, 11, b"A" * (2 << 20))  # a 2 MiB cmdline, cut at the 256 KiB bound
    truncated["cmdline"].append(60)
    fs.add(61, 11, b"\xff\xfeminer\0--\x80\x81\0\xc3\x28\0")  # not UTF-8
    fs.add(70, 71, ["cycle-a"])
    fs.add(71, 70, ["cycle-b"])
    fs.add(72, 72, ["self-parent"])
    fs.add(73, 4_000_000, ["parent-never-seen"])
    # Unreadable (for a reader without CAP_DAC_OVERRIDE): stat of mode 000.
    for pid in range(80, 90):
        fs.add(pid, 11, ["locked"])
        os.chmod(root / str(pid) / "stat", 0)
        skipped["denied"].append(pid)
    # Not files at all: a directory for stat, a FIFO for cmdline, endless devices.
    fs.add(90, 11, ["odd"])
    os.remove(root / "90" / "stat")
    os.mkdir(root / "90" / "stat")
    skipped["io_error"].append(90)
    fs.add(91, 11, ["odd"])
    os.remove(root / "91" / "cmdline")
    os.mkfifo(root / "91" / "cmdline")
    fs.add(92, 11, ["odd"])
    os.remove(root / "92" / "stat")
    os.symlink("/dev/zero", root / "92" / "stat")  # endless NULs: cut, then unparseable
    skipped["malformed_stat"].append(92)
    fs.add(93, 11, ["odd"])
    os.remove(root / "93" / "cmdline")
    os.symlink("/dev/urandom", root / "93" / "cmdline")  # endless bytes: cut at the bound
    truncated["cmdline"].append(93)

    # A chain as deep as `chain` inside the workspace, and `siblings` children of pid 1.
    links = range(CHAIN_BASE, CHAIN_BASE + chain)
    _bulk(root, links, {p: (p - 1 if p > CHAIN_BASE else 11) for p in links}, 0)
    _bulk(root, range(SIBLING_BASE, SIBLING_BASE + siblings), None, 1)
    processes = sum(1 for name in os.listdir(root) if name.isdigit())
    return Hostile(root, 11, skipped, truncated, processes)
