"""What a scan shard remembers of a process between rounds, and the open files it may keep.

A process already read is, on later rounds, only checked: its stat line is read again
(from its second round on through a file descriptor kept open, where the budget allows) and
compared with the last one. cmdline, the executable's identity and the record are re-used
while the stat line says the process has not exec'd (``stages.statline.exec_marks``); every
``recheck_every`` rounds they are read again in any case (``stages.shardreader.ShardReader``).

A kept descriptor of a procfs ``<pid>/stat`` is bound to that process, not to its number:
once the process is reaped, reading it fails with ESRCH, so a reused pid can never be
mistaken for the process read before. A kept descriptor of a plain file (a fake tree) reads
on after its file is removed, so there the reader checks its link count each round (a
removed file: the process is gone, as procfs would say) and, at each full read, that it is
still the file at its path (a directory moved aside).

Each kept descriptor costs the kernel about 4 KiB (procfs allocates a page-sized buffer at
the first read and holds it until close), so how many are kept is bounded by ``keep_open``
(64 MiB of kernel memory at most, per reader, by default) and by RLIMIT_NOFILE, whose soft
limit a reader raises towards the hard one as far as it needs (as Go's runtime does for every
program); processes beyond it are checked by opening their stat file each round.
"""

from __future__ import annotations

import ctypes
import os
import resource
from collections.abc import Mapping
from typing import Final

import msgspec

from stages.base.schema import RawProcess

PROC_SUPER_MAGIC: Final = 0x9FA0  # statfs f_type of procfs (linux/magic.h)
KEEP_OPEN: Final = 16384  # default bound on the descriptors one shard keeps open
FD_RESERVE: Final = 256  # descriptors left for sockets, metrics files and reads in flight


MAPS_UNREAD = -1  # Known.vsize of a process whose maps the scan has not read


class Known(msgspec.Struct, gc=False):
    """One process as last read: its record, its stat line, and when to re-read it in full.

    ``fd`` is the kept stat descriptor, or -1. ``due`` is the reader's round count at which
    the next full read is forced; 0 means on every round (ring1 candidates, whose environment
    decides what a workspace is). ``cut``: the record's cmdline was cut at its bound, which is
    counted every round the record is returned, as when every round read it. A Struct without
    GC tracking: it is made for every process and holds no cycles, so the collector need not
    walk tens of thousands of them.
    """

    fd: int
    stat: bytes
    proc: RawProcess
    due: int
    cut: bool = False
    # Issue 11: the virtual size when the maps were last read (MAPS_UNREAD: not yet), and
    # the round count before which a changed size does not make the scan read them again.
    vsize: int = 0
    maps_due: int = 0
    rechecks: int = 0  # full re-reads since the last full read
    ran: bool = False  # it may have mapped since the maps were last read (stat line moved)


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


class KeptDescriptors:
    """The stat descriptors a reader keeps open: how many, and how many it may.

    When the process runs out of descriptors anyway (another reader in it, a limit lowered
    under it), ``shed`` gives kept ones back one at a time and stops keeping more: a process
    must never go unread for want of a descriptor the reader itself holds.
    """

    def __init__(self, keep_open: int) -> None:
        self.limit = fd_budget(keep_open)
        self.count = 0

    def keep(self, fd: int) -> int:
        """``fd`` if the budget allows keeping it; else it is closed and -1 returned."""
        if self.count < self.limit:
            self.count += 1
            return fd
        os.close(fd)
        return -1

    def release(self, fd: int) -> None:
        if fd >= 0:
            os.close(fd)
            self.count -= 1

    def shed(self, known: Mapping[int, Known]) -> bool:
        """Close one kept descriptor (and keep no more); ``False`` if none is kept."""
        self.limit = min(self.limit, max(0, self.count - 1))
        for entry in known.values():
            if entry.fd >= 0:
                self.release(entry.fd)
                entry.fd = -1
                return True
        return False


def fd_budget(keep_open: int) -> int:
    """How many descriptors a reader may keep: ``keep_open``, within RLIMIT_NOFILE. The soft
    limit is raised as far as that needs, up to the hard limit."""
    keep_open = max(0, keep_open)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return keep_open
    want = keep_open + FD_RESERVE
    if soft < want and (hard == resource.RLIM_INFINITY or soft < hard):
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):
            pass  # keep what we have: fewer descriptors, the same results
    return max(0, min(keep_open, soft - FD_RESERVE))


def close_all(known: Mapping[int, Known]) -> None:
    """Close every kept descriptor (a reader's finaliser; entries stay as they are)."""
    for entry in known.values():
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1
