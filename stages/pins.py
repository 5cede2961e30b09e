"""Open descriptors of executables, kept so a file can be judged after its process is gone.

A descriptor of ``/proc/<pid>/exe`` keeps the file itself — deleted, overwritten by rename,
or a memfd — readable for as long as it is open. Another process of the same user (root)
reopens it through ``/proc/<holder pid>/fd/<n>`` (``PinnedExecutables.path``), which is how a
matcher in another process reads it; it must check that what it opened has the record's
device and inode, because a descriptor number is reused once its pin is released.

What is held is bounded: a held file keeps its disk space and an inode allocated even when
deleted, so a hostile user who execs and deletes large files must not be able to make us hold
them without limit. Pins are taken per process (a key the caller chooses) and shared per file:
a thousand runs of ``/bin/true`` hold one descriptor. Over a bound the oldest processes' pins
are released and counted (``evicted``); a file larger than the byte bound alone is not pinned
(``refused``).
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

import msgspec

MAX_FILES: Final = 1024
MAX_BYTES: Final = 1 << 30
MAX_PROCESSES: Final = 65536


class _File(msgspec.Struct, gc=False):
    fd: int
    size: int
    refs: int


class PinnedExecutables:
    """Executables held open for the processes that ran them, oldest released first."""

    def __init__(
        self,
        *,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
        max_processes: int = MAX_PROCESSES,
        proc_root: str = "/proc",
    ) -> None:
        # The procfs the holder's pid is named in (``/host/proc`` in a container that has
        # the host's pid namespace and its procfs mounted there).
        self.proc_root = proc_root
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_processes = max_processes
        self._procs: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()
        self._files: dict[tuple[int, int], _File] = {}
        self.held_bytes = 0
        self.evicted = 0  # pins released for a bound before their process was judged
        self.refused = 0  # files not pinned: not regular, or larger than the byte bound

    def __len__(self) -> int:
        """How many processes hold a pin."""
        return len(self._procs)

    @property
    def held_files(self) -> int:
        return len(self._files)

    def pin(self, key: Hashable, fd: int) -> tuple[int, int] | None:
        """Keep ``fd`` (an open executable) for process ``key``. Always takes ownership of
        ``fd``: it is closed when it is not kept, or when the file is already held. Returns
        the file's (device, inode), or ``None`` when it is not pinned. Raises nothing."""
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            self.refused += 1
            return None
        ident = (info.st_dev, info.st_ino)
        if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
            os.close(fd)
            self.refused += 1
            return None
        self.release(key)  # a process that execs the same file again: one pin, renewed
        held = self._files.get(ident)
        if held is None:
            self._files[ident] = _File(fd, info.st_size, 1)
            self.held_bytes += info.st_size
        else:
            os.close(fd)
            held.refs += 1
        self._procs[key] = ident
        self._evict()
        return ident if key in self._procs else None

    def fd(self, key: Hashable) -> int | None:
        """The descriptor pinned for ``key`` (owned by this holder), or ``None``."""
        ident = self._procs.get(key)
        return None if ident is None else self._files[ident].fd

    def path(self, key: Hashable) -> str | None:
        """Where another process of this user reopens the pinned file, or ``None``."""
        fd = self.fd(key)
        return None if fd is None else f"{self.proc_root}/{os.getpid()}/fd/{fd}"

    def release(self, key: Hashable) -> bool:
        """Drop ``key``'s pin (its process was judged); the file closes with its last pin."""
        ident = self._procs.pop(key, None)
        if ident is None:
            return False
        held = self._files[ident]
        held.refs -= 1
        if held.refs == 0:
            del self._files[ident]
            self.held_bytes -= held.size
            os.close(held.fd)
        return True

    def close(self) -> None:
        for held in self._files.values():
            os.close(held.fd)
        self._files.clear()
        self._procs.clear()
        self.held_bytes = 0

    def _evict(self) -> None:
        while self._procs and (
            len(self._files) > self.max_files
            or self.held_bytes > self.max_bytes
            or len(self._procs) > self.max_processes
        ):
            oldest = next(iter(self._procs))
            self.release(oldest)
            self.evicted += 1
