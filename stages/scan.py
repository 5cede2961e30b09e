"""The scan stage's logic: read one shard of a procfs root into raw process records."""

from __future__ import annotations

import errno
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import msgspec

from stages.base.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import RawProcess, Record, ShardScan
from stages.cgroupread import CgroupPaths
from stages.execview import (
    PF_KTHREAD,
    arg_span,
    argv_length,
    maps_digest,
    read_maps,
    stat_vsize,
)
from stages.known import KEEP_OPEN, MAPS_UNREAD, KeptDescriptors, Known, close_all, is_procfs
from stages.parts import split, within_argv_budget
from stages.procfs import (
    OPEN_FLAGS,
    STAT_READ,
    exe_identity,
    exec_marks,
    is_ring1,
    list_pids,
    parse_cmdline,
    parse_gitpod_env,
    parse_stat,
    parse_stat_line,
    read_bounded,
    read_stat,
    same_file,
    skip_reason,
)

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

_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
T = TypeVar("T")


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
        self.cmdline_max_bytes = cmdline_max_bytes
        self.environ_max_bytes = environ_max_bytes
        self.read_cgroup = read_cgroup
        self._cgroups = CgroupPaths()
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
        self._reads = 0
        # What the round being read left out or cut, by reason and by file.
        self._skipped: Counter[str] = Counter()
        self._truncated: Counter[str] = Counter()
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
        skipped = self._skipped = Counter()
        truncated = self._truncated = Counter()
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
            return self._retry(list_pids, self.proc_root, self.shard, self.shards)
        except OSError as err:
            # The root itself is unreadable: the round is empty and says why.
            skipped["root_" + skip_reason(err)] += 1
            return []

    def _retry(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)``; when the process is out of descriptors, close kept ones until it
        succeeds: the reader's own descriptors must never keep a process (or the listing)
        unread. Raises ``OSError``."""
        while True:
            try:
                return read(*args)
            except OSError as err:
                if err.errno not in _NO_DESCRIPTORS or not self._fds.shed(self._known):
                    raise

    def _read_new(self, pid: int) -> RawProcess | None:
        """A process not read before. Its stat descriptor is not kept yet: only one still
        there next round gets one (most processes on a busy node live less than a round,
        and a kept descriptor's first read costs the kernel a fresh buffer)."""
        base = f"{self.proc_root}/{pid}/"
        try:
            data = self._retry(read_stat, base + "stat")
        except OSError as err:
            self._skipped[skip_reason(err)] += 1
            return None
        return self._complete(pid, base, -1, data)

    def _open_stat(self, path: str) -> tuple[bytes, int]:
        """The stat line, and its descriptor if the budget allows keeping it (else -1)."""
        fd = os.open(path, OPEN_FLAGS)
        try:
            data = os.read(fd, STAT_READ)
        except OSError:
            os.close(fd)
            raise
        return data, self._fds.keep(fd)

    def _refresh(self, pid: int, entry: Known, data: bytes | None) -> RawProcess | None:
        """A process read before whose stat line changed, is due for a full re-read, or has
        no kept descriptor. ``data`` is the line read through the kept descriptor; ``None``
        if that failed (the process is gone, or its pid names another one now)."""
        base = f"{self.proc_root}/{pid}/"
        if entry.fd < 0:
            try:
                data, entry.fd = self._retry(self._open_stat, base + "stat")
            except OSError:
                data = None
        if data is None:
            self._forget(pid)
            return self._read_new(pid)  # whatever is listed under the pid now, read afresh
        due = self._reads >= entry.due
        if not due and (data == entry.stat or exec_marks(data) == exec_marks(entry.stat)):
            return self._same_process(pid, entry, data)
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

    def _same_process(self, pid: int, entry: Known, data: bytes) -> RawProcess | None:
        """No exec since the last read: the record stands (ppid updated if the stat line
        changed and the process was re-parented)."""
        if data != entry.stat:
            entry.ran = True  # its times, faults or size moved: it ran since the last read
            stat = parse_stat(data)
            if stat is None:
                self._forget(pid)
                self._skipped["malformed_stat"] += 1
                return None
            vsize = stat_vsize(data)
            if vsize == entry.vsize or self._reads >= entry.maps_due:
                entry.stat = data  # else kept: the changed line is looked at again next round
            if stat.ppid != entry.proc.ppid:  # re-parented: the same process, judged as before
                entry.proc = msgspec.structs.replace(entry.proc, ppid=stat.ppid)
            if vsize != entry.vsize and self._reads >= entry.maps_due:
                self._remap(pid, entry, vsize)
        if entry.cut:
            self._truncated["cmdline"] += 1
        return entry.proc

    def _complete(self, pid: int, base: str, fd: int, data: bytes) -> RawProcess | None:
        """The full read of a process whose stat line is ``data`` (read first, so an exec
        racing this read shows as a changed stat line next round)."""
        stat = parse_stat_line(data)
        if stat is None:
            self._skipped["malformed_stat"] += 1
            self._fds.release(fd)
            return None
        if stat.flags & PF_KTHREAD:
            # A kernel thread (a flag only the kernel sets): no argv, no executable to read.
            raw_cmdline, cut, cmdline, exe_dev, exe_ino = b"", False, [], 0, 0
        else:
            try:
                raw_cmdline, cut = self._retry(
                    read_bounded, base + "cmdline", self.cmdline_max_bytes
                )
            except OSError as err:
                self._skipped[skip_reason(err)] += 1
                self._fds.release(fd)
                return None
            if cut:
                self._truncated["cmdline"] += 1
            cmdline = parse_cmdline(raw_cmdline)
            exe_dev, exe_ino = exe_identity(base)
        ring1 = is_ring1(cmdline)
        env = self._gitpod_env(base) if ring1 else None
        cgroup = self._cgroup(base) if self.read_cgroup else ""
        # No maps_id yet (0: not read). Match reads the maps when it judges the process and
        # answers with their digest, which the filter keeps; this scan reads them at the
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
            raw_cmdline, cut = self._retry(read_bounded, base + "cmdline", self.cmdline_max_bytes)
        except OSError as err:
            self._forget(pid)
            self._skipped[skip_reason(err)] += 1
            return None
        cmdline = parse_cmdline(raw_cmdline)
        if is_ring1(cmdline):  # it turned into a ring1 candidate: its environment is needed
            del self._known[pid]
            return self._complete(pid, base, entry.fd, entry.stat)
        if cut:
            self._truncated["cmdline"] += 1
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
                maps_id, entry.vsize, entry.ran = self._maps_id(base), vsize, False
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

    def _maps_id(self, base: str) -> int:
        """The digest of the process's executable mappings (0 if they cannot be read)."""
        try:
            maps, cut = self._retry(read_maps, base)
        except OSError:
            return 0  # gone (its next read says so), or not ours to read
        if cut:
            self._truncated["maps"] += 1
        return maps_digest(maps)

    def _remap(self, pid: int, entry: Known, vsize: int) -> None:
        """The virtual size changed: read the maps again; a new mapping is a new record."""
        entry.vsize, entry.ran = vsize, False
        entry.maps_due = self._reads + MAPS_HINT_ROUNDS
        maps_id = self._maps_id(f"{self.proc_root}/{pid}/")
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

    def _cgroup(self, base: str) -> str:
        """The cgroup path that attributes the process (``stages.cgroup``); ``""`` when it
        cannot be read (gone, or a fake tree without the file)."""
        try:
            path, cut = self._retry(self._cgroups.read, base)
        except OSError:
            return ""
        if cut:
            self._truncated["cgroup"] += 1
        return path

    def _gitpod_env(self, base: str) -> dict[str, str] | None:
        try:
            raw, cut = self._retry(read_bounded, base + "environ", self.environ_max_bytes)
        except OSError:
            return None  # "its environ can be read" is part of what makes a workspace
        if cut:
            self._truncated["environ"] += 1
        return parse_gitpod_env(raw, truncated=cut)


# However many processes share a round's argv budget, each keeps this much of its argv (a
# miner's pool argument is no further in than that; what is cut is counted).
ARGV_FLOOR = 4096


def random_fraction() -> float:
    """A fraction in [0, 1) from the kernel's random bytes (nothing a process can observe)."""
    return int.from_bytes(os.urandom(4), "little") / 2**32


class ScanStage(Stage):
    """A source: reads its shard once per round. Rounds are numbered by wall-clock interval
    (``round_id = time // interval``), so separate shard processes agree on them without
    talking; the first round starts at once. A round goes out in parts of at most
    ``message_bytes`` (see ``split``), its argv cut to ``round_argv_bytes`` (this shard's
    share of a round's argv budget) in all.

    Round ``r`` starts at a random phase within its interval, ``r * interval + phase``, drawn
    afresh for every round and by every shard on its own (``phase`` returns a fraction in
    [0, 1)): a process that knows the interval cannot live between two rounds by knowing when
    they start. Rounds of two shards can then start up to an interval apart; the tree's wait
    for a round's shards covers that (``pipeline.builders``)."""

    def __init__(
        self,
        reader: ShardReader,
        interval: float,
        message_bytes: int = 4 << 20,
        round_argv_bytes: int = 32 << 20,
        phase: Callable[[], float] = random_fraction,
    ) -> None:
        self.reader = reader
        self.interval = interval
        self.message_bytes = message_bytes
        self.round_argv_bytes = round_argv_bytes
        self._draw = phase
        self._last: int | None = None
        self._phase: tuple[int, float] = (-1, 0.0)
        reader.set_recheck(max(1, int(RECHECK_SECONDS / interval)))

    def _start_of(self, round_id: int) -> float:
        if self._phase[0] != round_id:
            # Kept clear of the interval's end, so the start is still inside round_id.
            fraction = min(max(self._draw(), 0.0), 0.999)
            self._phase = (round_id, fraction * self.interval)
        return round_id * self.interval + self._phase[1]

    def next_tick(self, now: float) -> float:
        if self._last is None:
            return now
        current = int(now // self.interval)
        if current > self._last:  # this interval's round has not run: at its phase
            return max(now, self._start_of(current))
        return self._start_of(current + 1)

    def tick(self, now: float) -> Sequence[Record]:
        self._last = int(now // self.interval)
        scan, cut = within_argv_budget(
            self.reader.read(self._last), self.round_argv_bytes, ARGV_FLOOR
        )
        if cut:
            self.reader.meter.inc(SCAN_TRUNCATED, cut, file="round_argv")
        return split(scan, self.message_bytes)

    def close(self) -> None:
        self.reader.close()
