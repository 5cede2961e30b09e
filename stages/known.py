"""What a scan shard remembers of a process between rounds, and the open files it may keep.

A process already read is, on later rounds, only checked: its stat line is read again
(through a file descriptor kept open, where the budget allows) and compared with the last
one. cmdline, the executable's identity and the record are re-used while the stat line says
the process has not exec'd (``stages.procfs.exec_marks``), and re-read in full at a random
round at most ``recheck_every`` rounds after the last full read in any case.

A kept descriptor of a procfs ``<pid>/stat`` is bound to that process, not to its number:
once the process is reaped, reading it fails with ESRCH, so a reused pid can never be
mistaken for the process read before. A kept descriptor of a plain file (a fake tree) only
follows that file, so one unlinked or replaced since is noticed by its link count.

Each kept descriptor costs the kernel about 4.3 KiB (procfs allocates a page-sized buffer at
the first read and holds it until close), so how many are kept is bounded by ``keep_open``
and by RLIMIT_NOFILE; processes beyond it are checked by opening their stat file each round.
"""

from __future__ import annotations

import ctypes
import os
import resource
from collections.abc import Mapping
from typing import Final

import msgspec

from pipeline.schema import RawProcess

PROC_SUPER_MAGIC: Final = 0x9FA0  # statfs f_type of procfs (linux/magic.h)
KEEP_OPEN: Final = 4096  # default bound on the descriptors one shard keeps open
FD_RESERVE: Final = 256  # descriptors left for sockets, metrics files and reads in flight


class Known(msgspec.Struct, gc=False):
    """One process as last read: its record, its stat line, and when to re-read it in full.

    ``fd`` is the kept stat descriptor, or -1. ``due`` is the reader's round count at which
    the next full read is forced; 0 means on every round (ring1 candidates, whose environment
    decides what a workspace is). A Struct without GC tracking: it is made for every process
    and holds no cycles, so the collector need not walk tens of thousands of them.
    """

    fd: int
    stat: bytes
    proc: RawProcess
    due: int


def is_procfs(path: str) -> bool:
    """Whether ``path`` is on a procfs mount; ``False`` when that cannot be told (the safe
    answer: plain-file descriptors get the extra link-count check)."""

    class StatFs(ctypes.Structure):
        # struct statfs starts with f_type (a long) on every 64-bit Linux ABI; the buffer is
        # oversized for the remaining fields.
        _fields_ = (("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256))

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = StatFs()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return int(buf.f_type) & 0xFFFFFFFF == PROC_SUPER_MAGIC


def fd_budget(keep_open: int) -> int:
    """How many descriptors a reader may keep: ``keep_open``, within the soft RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max(0, keep_open)
    return max(0, min(keep_open, soft - FD_RESERVE))


def close_all(known: Mapping[int, Known]) -> None:
    """Close every kept descriptor (a reader's finaliser; entries stay as they are)."""
    for entry in known.values():
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1
