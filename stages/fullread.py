"""What a scan reads of one process beyond its stat line, each read bounded and each cut counted.

``ProcessFiles`` does the reading for one shard reader (``stages.shardreader``): a process's
record from its first full read (``record``), its command line, the digest of its maps, the
cgroup path that attributes it and a ring1 candidate's environment. When to read what is the
reader's business; how is this module's.

Every read is retried while the process is out of descriptors, after giving back one the
reader keeps (``KeptDescriptors.shed``): the reader's own descriptors must never keep a
process, or the listing, unread. What a round skipped and cut goes into the counters the
reader hands over for that round (``skipped``, ``truncated``).
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

from stages.base.schema import RawProcess
from stages.cgroupread import CgroupPaths
from stages.execview import PF_KTHREAD, arg_span, argv_length, maps_digest, read_maps
from stages.known import KeptDescriptors, Known
from stages.procfs import (
    OPEN_FLAGS,
    STAT_READ,
    exe_identity,
    is_ring1,
    parse_cmdline,
    parse_gitpod_env,
    read_bounded,
    skip_reason,
)
from stages.statline import parse_stat_line

_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
T = TypeVar("T")


class ProcessFiles:
    def __init__(
        self,
        fds: KeptDescriptors,
        known: Mapping[int, Known],
        *,
        cmdline_max_bytes: int,
        environ_max_bytes: int,
        read_cgroup: bool,
    ) -> None:
        self._fds = fds
        self._known = known
        self.cmdline_max_bytes = cmdline_max_bytes
        self.environ_max_bytes = environ_max_bytes
        self.read_cgroup = read_cgroup
        self._cgroups = CgroupPaths()
        # What the round being read left out or cut, by reason and by file.
        self.skipped: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()

    def new_round(self) -> tuple[Counter[str], Counter[str]]:
        """Fresh counters for a round's skips and cuts: (skipped, truncated)."""
        self.skipped, self.truncated = Counter(), Counter()
        return self.skipped, self.truncated

    def retry(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)``; when the process is out of descriptors, close kept ones until it
        succeeds. Raises ``OSError``."""
        while True:
            try:
                return read(*args)
            except OSError as err:
                if err.errno not in _NO_DESCRIPTORS or not self._fds.shed(self._known):
                    raise

    def open_stat(self, path: str) -> tuple[bytes, int]:
        """The stat line, and its descriptor if the budget allows keeping it (else -1).
        Raises ``OSError``."""
        return self.retry(self._open_stat, path)

    def _open_stat(self, path: str) -> tuple[bytes, int]:
        fd = os.open(path, OPEN_FLAGS)
        try:
            data = os.read(fd, STAT_READ)
        except OSError:
            os.close(fd)
            raise
        return data, self._fds.keep(fd)

    def cmdline(self, base: str) -> tuple[bytes, bool]:
        """The command line as read (bounded) and whether it was cut. Raises ``OSError``."""
        return self.retry(read_bounded, base + "cmdline", self.cmdline_max_bytes)

    def record(self, pid: int, base: str, data: bytes) -> tuple[RawProcess, bool, bool] | None:
        """The full read of a process whose stat line is ``data`` (read first, so an exec
        racing this read shows as a changed stat line next round): its record, whether its
        cmdline was cut at its bound, and whether it is a ring1 candidate (its environment
        was read). ``None``, counted, when the line is malformed or the process could not
        be read. (A plain tuple and no call to ``cmdline``: this runs for every process a
        first round sees, and each costs it.)"""
        stat = parse_stat_line(data)
        if stat is None:
            self.skipped["malformed_stat"] += 1
            return None
        if stat.flags & PF_KTHREAD:
            # A kernel thread (a flag only the kernel sets): no argv, no executable to read.
            raw_cmdline, cut, cmdline, exe_dev, exe_ino = b"", False, [], 0, 0
        else:
            try:
                raw_cmdline, cut = self.retry(
                    read_bounded, base + "cmdline", self.cmdline_max_bytes
                )
            except OSError as err:
                self.skipped[skip_reason(err)] += 1
                return None
            if cut:
                self.truncated["cmdline"] += 1
            cmdline = parse_cmdline(raw_cmdline)
            exe_dev, exe_ino = exe_identity(base)
        ring1 = is_ring1(cmdline)
        env = self.gitpod_env(base) if ring1 else None
        cgroup = self.cgroup(base) if self.read_cgroup else ""
        # No maps_id yet (0: not read). Match reads the maps when it judges the process and
        # answers with their digest, which the filter keeps; the scan reads them at the
        # process's first full re-read, or from its next round on once its virtual size
        # changed. So the maps of a process that lives less than a round (most, on a busy
        # node) are never read here, and a dlopen after the judgement is still seen within a
        # full re-read period. Read here, they added 2.7x the Python floor to a first round.
        proc = RawProcess(
            pid,
            stat.ppid,
            stat.starttime,
            stat.comm,
            cmdline,
            exe_dev,
            exe_ino,
            env,
            cgroup=cgroup,
            exec_id=stat.exec_id,
            argv_bytes=argv_length(raw_cmdline, cut, arg_span(data) if cut else 0),
            flags=stat.flags,
        )
        return proc, cut, ring1

    def maps_id(self, base: str) -> int:
        """The digest of the process's executable mappings (0 if they cannot be read)."""
        try:
            maps, cut = self.retry(read_maps, base)
        except OSError:
            return 0  # gone (its next read says so), or not ours to read
        if cut:
            self.truncated["maps"] += 1
        return maps_digest(maps)

    def cgroup(self, base: str) -> str:
        """The cgroup path that attributes the process (``stages.cgroup``); ``""`` when it
        cannot be read (gone, or a fake tree without the file)."""
        try:
            path, cut = self.retry(self._cgroups.read, base)
        except OSError:
            return ""
        if cut:
            self.truncated["cgroup"] += 1
        return path

    def gitpod_env(self, base: str) -> dict[str, str] | None:
        try:
            raw, cut = self.retry(read_bounded, base + "environ", self.environ_max_bytes)
        except OSError:
            return None  # "its environ can be read" is part of what makes a workspace
        if cut:
            self.truncated["environ"] += 1
        return parse_gitpod_env(raw, truncated=cut)
