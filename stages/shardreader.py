"""One scan shard's reader: which processes of a procfs root to read in full each round, and
which to only check (``ShardReader``). The reading itself is ``stages.fullread``; the stage
that runs a reader on its interval is ``stages.scan``."""

from __future__ import annotations

import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator

import msgspec

from stages.base.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from stages.base.meter import Meter
from stages.base.schema import RawProcess, ShardScan
from stages.execview import arg_span, argv_length, stat_vsize
from stages.fullread import ProcessFiles
from stages.known import KEEP_OPEN, MAPS_UNREAD, KeptDescriptors, Known, close_all, is_procfs
from stages.procfs import (
    STAT_READ,
    exe_identity,
    is_ring1,
    list_pids,
    parse_cmdline,
    read_stat,
    same_file,
    skip_reason,
)
from stages.statline import MovedLine, exec_marks, parse_moved_line

# A process is re-read in full at least this often: the bound on how long an exec that its
# stat line cannot show goes unnoticed. 30 s is the reference's own scan interval, so even
# that exec is seen no later than the reference sees any. The scan stage turns it into rounds
# of its interval; a reader on its own (``procsmith once``, the library) counts 15 rounds,
# which is 30 s at the default 2 s interval.
RECHECK_SECONDS = 30.0
RECHECK_EVERY = 15
# A process whose virtual size changed (an mmap: a dlopen) has its maps re-read, at most once
# in this many rounds (a busy process's size changes all the time).
MAPS_HINT_ROUNDS = 5
# A full re-read reads the maps at least every this many times (see ShardReader._recheck):
# that bounds a mapping swapped in at an unchanged size (4 x 30 s).
MAPS_EVERY_RECHECKS = 4


class ShardReader:
    """Reads the processes whose pid mod ``shards`` is ``shard``.

    Skips (vanished, denied, unparseable) and truncated reads are counted through the meter
    and in the record, so a round explains what it left out.

    The first time a process is seen, its stat, cmdline and executable identity (and the
    environment of a ring1 candidate) are read. On later rounds only its stat line is read
    and compared (``stages.known``): while it shows no exec, the record of the last full read
    is returned again, with ppid updated if the process was re-parented. A full re-read
    happens when the stat line shows an exec (or a new process under the same pid), on every
    round for ring1 candidates, and for every process every ``recheck_every`` rounds (its
    phase random). That period bounds the residual window for an exec the stat line cannot
    show (bench/README.md, "The steady state"): a process that turned off address
    randomisation and execs a program of identical layout, name and argument sizes keeps its
    old record until then. ``recheck_every=1`` reads everything every round.

    With ``read_cgroup`` (the cgroup workspace provider is on), ``/proc/<pid>/cgroup`` is read
    for a process new to the scan and for one whose stat line shows an exec, and the path that
    attributes it is kept: ``runc exec`` (under ``kubectl exec``, ``docker exec``) joins the
    container's cgroup before it execs, and a fork inherits its parent's cgroup. Neither the
    fast path nor the periodic re-read reads it, so steady rounds cost what they cost without
    it. A process moved to another cgroup without an exec keeps its old path; moving a
    process takes write access to both cgroups, which a container's user does not have.
    """

    def __init__(
        self,
        proc_root: str,
        meter: Meter,
        *,
        shard: int = 0,
        shards: int = 1,
        cmdline_max_bytes: int = 256 * 1024,
        environ_max_bytes: int = 1024 * 1024,
        recheck_every: int = RECHECK_EVERY,
        keep_open: int = KEEP_OPEN,
        entropy: Callable[[int], bytes] = os.urandom,
        read_cgroup: bool = False,
    ) -> None:
        self.proc_root = os.path.abspath(proc_root)
        self.meter = meter
        self.shard = shard
        self.shards = shards
        self.read_cgroup = read_cgroup
        self.set_recheck(recheck_every)
        self._entropy = entropy
        self._jitter: Iterator[int] = iter(())
        # A kept procfs descriptor fails once its process is gone. A plain file's (a fake
        # tree) reads on after its file is removed, so its link count is checked each round
        # instead; a file moved aside (still linked) is caught at the next full read, which
        # compares the descriptor with the file at its path.
        self._plain_files = not is_procfs(self.proc_root)
        self._fds = KeptDescriptors(keep_open)
        self._known: dict[int, Known] = {}
        self._files = ProcessFiles(
            self._fds,
            self._known,
            cmdline_max_bytes=cmdline_max_bytes,
            environ_max_bytes=environ_max_bytes,
            read_cgroup=read_cgroup,
        )
        self._reads = 0
        self._finalizer = weakref.finalize(self, close_all, self._known)

    def set_recheck(self, rounds: int) -> None:
        """Re-read every process in full every ``rounds`` rounds.

        Its first full re-read falls at a random round among the next ``rounds`` (from the
        kernel's random bytes, two per process, drawn once a round), so re-reads spread
        evenly over rounds and each process has its own phase. A process cannot observe
        being read, so it cannot learn its phase and time an exec between two re-reads.
        """
        if rounds < 1:
            raise ValueError("processes must be re-read at least every round")
        self._period = rounds

    def __len__(self) -> int:
        """How many processes are remembered."""
        return len(self._known)

    @property
    def open_descriptors(self) -> int:
        """How many stat descriptors are kept open."""
        return self._fds.count

    def close(self) -> None:
        """Close the kept descriptors and forget every process."""
        self._finalizer()
        self._known.clear()
        self._fds.count = 0

    def read(self, round_id: int) -> ShardScan:
        started = time.time()
        self._reads += 1
        skipped, truncated = self._files.new_round()
        pids = self._list(skipped)
        self._jitter = iter(memoryview(self._entropy(2 * len(pids))).cast("H"))
        procs: list[RawProcess] = []
        known, reads, check_links = self._known, self._reads, self._plain_files
        pread, fstat = os.pread, os.fstat
        for pid in pids:
            entry = known.get(pid)
            if entry is None:
                proc = self._read_new(pid)
            else:
                data = None
                if entry.fd >= 0:
                    try:
                        data = pread(entry.fd, STAT_READ, 0)
                        if check_links and fstat(entry.fd).st_nlink == 0:
                            data = None  # a fake tree's file removed, as procfs fails a dead one
                    except OSError:
                        data = None  # gone, or its pid names another process now
                    if data == entry.stat and reads < entry.due:
                        procs.append(entry.proc)  # the fast path: unchanged, not due
                        if entry.cut:
                            truncated["cmdline"] += 1
                        continue
                proc = self._refresh(pid, entry, data)
            if proc is not None:
                procs.append(proc)
        if len(known) > len(procs):
            self._forget_all_but({p.pid for p in procs})
        for reason, n in skipped.items():
            self.meter.inc(SCAN_SKIPPED, n, reason=reason)
        for file, n in truncated.items():
            self.meter.inc(SCAN_TRUNCATED, n, file=file)
        return ShardScan(
            round_id=round_id,
            shard=self.shard,
            shards=self.shards,
            proc_root=self.proc_root,
            procs=procs,
            listed=len(pids),
            skipped=dict(skipped),
            started=started,
        )

    def _list(self, skipped: Counter[str]) -> list[int]:
        try:
            return self._files.retry(list_pids, self.proc_root, self.shard, self.shards)
        except OSError as err:
            # The root itself is unreadable: the round is empty and says why.
            skipped["root_" + skip_reason(err)] += 1
            return []

    def _read_new(self, pid: int) -> RawProcess | None:
        """A process not read before. Its stat descriptor is not kept yet: only one still
        there next round gets one (most processes on a busy node live less than a round,
        and a kept descriptor's first read costs the kernel a fresh buffer)."""
        base = f"{self.proc_root}/{pid}/"
        try:
            data = self._files.retry(read_stat, base + "stat")
        except OSError as err:
            self._files.skipped[skip_reason(err)] += 1
            return None
        return self._complete(pid, base, -1, data)

    def _refresh(self, pid: int, entry: Known, data: bytes | None) -> RawProcess | None:
        """A process read before whose stat line changed, is due for a full re-read, or has
        no kept descriptor. ``data`` is the line read through the kept descriptor; ``None``
        if that failed (the process is gone, or its pid names another one now)."""
        base = f"{self.proc_root}/{pid}/"
        if entry.fd < 0:
            try:
                data, entry.fd = self._files.open_stat(base + "stat")
            except OSError:
                data = None
        if data is None:
            self._forget(pid)
            return self._read_new(pid)  # whatever is listed under the pid now, read afresh
        if self._reads < entry.due:  # not due: read in full only if the line shows an exec
            if data == entry.stat:
                return self._unchanged(entry)
            line = parse_moved_line(data)
            if line.marks == exec_marks(entry.stat):
                return self._same_process(pid, entry, data, line)
        return self._reread(pid, base, entry, data)

    def _reread(self, pid: int, base: str, entry: Known, data: bytes) -> RawProcess | None:
        """A full read: due, or the stat line shows an exec (or a new process)."""
        if self._plain_files and not same_file(entry.fd, base + "stat"):
            self._forget(pid)  # a fake process moved aside since its file was opened
            return self._read_new(pid)
        if data == entry.stat and entry.due:
            return self._recheck(pid, base, entry)
        del self._known[pid]  # its descriptor goes on to the new entry
        return self._complete(pid, base, entry.fd, data)

    def _unchanged(self, entry: Known) -> RawProcess:
        """The record stands as it is (its cut cmdline counted, as every round counts it)."""
        if entry.cut:
            self._files.truncated["cmdline"] += 1
        return entry.proc

    def _same_process(
        self, pid: int, entry: Known, data: bytes, line: MovedLine
    ) -> RawProcess | None:
        """No exec since the last read, though the stat line moved (``line`` is what it
        says): the record stands, with ppid updated if the process was re-parented."""
        entry.ran = True  # its times, faults or size moved: it ran since the last read
        if line.ppid is None:
            self._forget(pid)
            self._files.skipped["malformed_stat"] += 1
            return None
        vsize = line.vsize
        if vsize == entry.vsize or self._reads >= entry.maps_due:
            entry.stat = data  # else kept: the changed line is looked at again next round
        if line.ppid != entry.proc.ppid:  # re-parented: the same process, judged as before
            entry.proc = msgspec.structs.replace(entry.proc, ppid=line.ppid)
        if vsize != entry.vsize and self._reads >= entry.maps_due:
            self._remap(pid, entry, vsize)
        return self._unchanged(entry)

    def _complete(self, pid: int, base: str, fd: int, data: bytes) -> RawProcess | None:
        """The full read of a process whose stat line is ``data`` (``ProcessFiles.record``),
        remembered with when to read it in full again."""
        first = self._files.record(pid, base, data)
        if first is None:
            self._fds.release(fd)
            return None
        proc, cut, ring1 = first
        # ring1 candidates are due at once: their environment decides what a workspace is.
        phase = 1 + next(self._jitter, 0) % self._period
        due = 0 if ring1 else self._reads + phase
        # ran: what it did before this first read is not known (it may have mapped a library
        # after match judged it through the read at exec), so its first full re-read reads
        # the maps whether or not its stat line moves from here on.
        self._known[pid] = Known(fd, data, proc, due, cut, MAPS_UNREAD, self._reads + 1, ran=True)
        return proc

    def _recheck(self, pid: int, base: str, entry: Known) -> RawProcess | None:
        """A full read that is due while the stat line is as it was: read what the line does
        not show (the command line, the executable) and keep the record where they agree."""
        try:
            raw_cmdline, cut = self._files.cmdline(base)
        except OSError as err:
            self._forget(pid)
            self._files.skipped[skip_reason(err)] += 1
            return None
        cmdline = parse_cmdline(raw_cmdline)
        if is_ring1(cmdline):  # it turned into a ring1 candidate: its environment is needed
            del self._known[pid]
            return self._complete(pid, base, entry.fd, entry.stat)
        if cut:
            self._files.truncated["cmdline"] += 1
        entry.cut = cut
        exe_dev, exe_ino = exe_identity(base)
        # The maps too, if the process ran since they were read (its stat line moved: only
        # the process itself maps, and code that does not run mines nothing), when the
        # virtual size changed since (a dlopen the size hint has not caught yet), and every
        # MAPS_EVERY_RECHECKS-th re-read whatever the size: a mapping swapped for one of
        # exactly the same size is seen within that many periods of running. After its
        # first full re-read, an idle process's maps are not read again. Reading them at
        # every re-read cost the steady round 4.8 µs a process.
        proc = entry.proc
        entry.rechecks += 1
        maps_id = proc.maps_id
        if entry.ran:  # (the size and the span are parsed only when needed: most never are)
            vsize = stat_vsize(entry.stat)
            if vsize != entry.vsize or entry.rechecks % MAPS_EVERY_RECHECKS == 0:
                maps_id, entry.vsize, entry.ran = self._files.maps_id(base), vsize, False
        argv_bytes = argv_length(raw_cmdline, cut, arg_span(entry.stat) if cut else 0)
        now = (cmdline, exe_dev, exe_ino, maps_id, argv_bytes)
        if now != (proc.cmdline, proc.exe_dev, proc.exe_ino, proc.maps_id, proc.argv_bytes):
            proc = entry.proc = msgspec.structs.replace(
                proc,
                cmdline=cmdline,
                exe_dev=exe_dev,
                exe_ino=exe_ino,
                maps_id=maps_id,
                argv_bytes=argv_bytes,
            )
        entry.due = self._reads + self._period
        return proc

    def _remap(self, pid: int, entry: Known, vsize: int) -> None:
        """The virtual size changed: read the maps again; a new mapping is a new record."""
        entry.vsize, entry.ran = vsize, False
        entry.maps_due = self._reads + MAPS_HINT_ROUNDS
        maps_id = self._files.maps_id(f"{self.proc_root}/{pid}/")
        if maps_id != entry.proc.maps_id:
            entry.proc = msgspec.structs.replace(entry.proc, maps_id=maps_id)

    def _forget(self, pid: int) -> None:
        entry = self._known.pop(pid, None)
        if entry is not None:
            self._fds.release(entry.fd)

    def _forget_all_but(self, present: set[int]) -> None:
        """Forget the processes not read this round (their memory and descriptors)."""
        for pid in [p for p in self._known if p not in present]:
            self._forget(pid)
