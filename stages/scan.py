"""The scan stage's logic: read one shard of a procfs root into raw process records."""

from __future__ import annotations

import errno
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import msgspec

from pipeline.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from pipeline.meter import Meter
from pipeline.schema import RawProcess, Record, ShardScan
from pipeline.stage import Stage
from stages.known import KEEP_OPEN, Known, close_all, fd_budget, is_procfs
from stages.procfs import (
    OPEN_FLAGS,
    STAT_MAX_BYTES,
    exec_marks,
    parse_cmdline,
    parse_gitpod_env,
    parse_stat,
    read_bounded,
)

RING1_PREFIX = ("/proc/self/exe", "ring1")
PID_MAX = 2**22  # the kernel's PID_MAX_LIMIT; a larger "pid" is not a process
# A process is re-read in full at least this often: the bound on how long an exec that its
# stat line cannot show goes unnoticed. 30 s is the reference's own scan interval, so even
# that exec is seen no later than the reference sees any. The scan stage turns it into rounds
# of its interval; a reader on its own (``procsmith once``, the library) counts 15 rounds,
# which is 30 s at the default 2 s interval.
RECHECK_SECONDS = 30.0
RECHECK_EVERY = 15
_STAT_READ = STAT_MAX_BYTES + 1  # one byte more than a stat line may have: a longer one is cut

_VANISHED = frozenset({errno.ENOENT, errno.ESRCH})
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def is_ring1(cmdline: list[str]) -> bool:
    return len(cmdline) >= 2 and cmdline[0] == RING1_PREFIX[0] and cmdline[1] == RING1_PREFIX[1]


def skip_reason(err: OSError) -> str:
    """A bounded label for why a process could not be read."""
    if err.errno in _VANISHED:
        return "vanished"
    if err.errno in _DENIED:
        return "denied"
    return "io_error"


def list_pids(proc_root: str) -> list[int]:
    """The numeric entries of the procfs root, ascending."""
    pids = []
    for name in os.listdir(proc_root):
        # str.isdigit accepts non-ASCII digits; a pid is ASCII.
        if name.isascii() and name.isdigit() and len(name) < 8:
            pid = int(name)
            if 0 < pid <= PID_MAX:
                pids.append(pid)
    pids.sort()
    return pids


class ShardReader:
    """Reads the processes whose pid mod ``shards`` is ``shard``.

    Skips (vanished, denied, unparseable) and truncated reads are counted through the meter
    and in the record, so a round explains what it left out.

    The first time a process is seen, its stat, cmdline and executable identity (and the
    environment of a ring1 candidate) are read. On later rounds only its stat line is read
    and compared (``stages.known``): while it shows no exec, the record of the last full read
    is returned again, with ppid updated if the process was re-parented. A full re-read
    happens when the stat line shows an exec (or a new process under the same pid), on every
    round for ring1 candidates, and for every process at a random round within
    ``recheck_every`` rounds of its last one. That bound is the whole residual window for an
    exec the stat line cannot show (bench/README.md, "steady state"): a process that turned
    off address randomisation and execs a program of identical layout, name and argument
    sizes keeps its old record until then. ``recheck_every=1`` reads everything every round.
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
    ) -> None:
        self.proc_root = os.path.abspath(proc_root)
        self.meter = meter
        self.shard = shard
        self.shards = shards
        self.cmdline_max_bytes = cmdline_max_bytes
        self.environ_max_bytes = environ_max_bytes
        self.set_recheck(recheck_every)
        self._entropy = entropy
        self._jitter: Iterator[int] = iter(())
        self._procfs = is_procfs(self.proc_root)
        self._open_left = fd_budget(keep_open)
        self._known: dict[int, Known] = {}
        self._reads = 0
        # What the round being read left out or cut, by reason and by file.
        self._skipped: Counter[str] = Counter()
        self._truncated: Counter[str] = Counter()
        self._finalizer = weakref.finalize(self, close_all, self._known)

    def set_recheck(self, rounds: int) -> None:
        """Re-read every process in full at most ``rounds`` rounds after its last full read.

        The round is drawn at random in [rounds/2, rounds]: the re-reads spread over rounds,
        and a process cannot time an exec around its next one (the random bytes are the
        kernel's, one per process read, drawn once a round).
        """
        if rounds < 1:
            raise ValueError("processes must be re-read at least every round")
        self._recheck_min = (rounds + 1) // 2
        self._recheck_span = rounds - self._recheck_min + 1

    def __len__(self) -> int:
        """How many processes are remembered."""
        return len(self._known)

    def close(self) -> None:
        """Close the kept descriptors and forget every process."""
        self._finalizer()
        self._known.clear()

    def read(self, round_id: int) -> ShardScan:
        started = time.time()
        self._reads += 1
        skipped = self._skipped = Counter()
        truncated = self._truncated = Counter()
        try:
            pids = [p for p in list_pids(self.proc_root) if p % self.shards == self.shard]
        except OSError as err:
            # The root itself is unreadable: the round is empty and says why.
            pids = []
            skipped["root_" + skip_reason(err)] += 1
        self._jitter = iter(self._entropy(len(pids)))
        procs = []
        known = self._known
        reads = self._reads
        pread = os.pread if self._procfs else None  # the fast path: a kept procfs descriptor
        for pid in pids:
            entry = known.get(pid)
            if entry is None:
                proc = self._read_new(pid)
            else:
                data = None
                if pread is not None and entry.fd >= 0:
                    try:
                        data = pread(entry.fd, _STAT_READ, 0)
                    except OSError:
                        pass  # gone, or its pid names another process now: _refresh sees
                    else:
                        if data == entry.stat and reads < entry.due:
                            procs.append(entry.proc)  # unchanged, not due: nothing to do
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

    def _read_new(self, pid: int) -> RawProcess | None:
        base = f"{self.proc_root}/{pid}/"
        try:
            fd = os.open(base + "stat", OPEN_FLAGS)
        except OSError as err:
            self._skipped[skip_reason(err)] += 1
            return None
        try:
            data = os.read(fd, _STAT_READ)
        except OSError as err:
            os.close(fd)
            self._skipped[skip_reason(err)] += 1
            return None
        if self._open_left > 0:
            self._open_left -= 1
        else:
            os.close(fd)
            fd = -1
        return self._complete(pid, base, fd, data)

    def _refresh(self, pid: int, entry: Known, data: bytes | None) -> RawProcess | None:
        """A process read before: re-use its record unless its stat line says otherwise.
        ``data`` is its stat line if the caller read it through the kept descriptor."""
        base = f"{self.proc_root}/{pid}/"
        try:
            if entry.fd < 0:
                data = _read_stat(base + "stat")
            elif data is None or not self._procfs:
                data = os.pread(entry.fd, _STAT_READ, 0)
                if not self._procfs and os.fstat(entry.fd).st_nlink == 0:
                    raise FileNotFoundError(pid)  # the fake tree's file was replaced
        except OSError:
            # Gone, or its pid now names another process: whatever is listed is read afresh.
            self._forget(pid)
            return self._read_new(pid)
        if data == entry.stat and self._reads < entry.due:
            return entry.proc
        if self._reads >= entry.due or exec_marks(data) != exec_marks(entry.stat):
            del self._known[pid]  # its descriptor goes on to the new entry
            return self._complete(pid, base, entry.fd, data)
        stat = None if len(data) > STAT_MAX_BYTES else parse_stat(data)
        if stat is None:
            self._forget(pid)
            self._skipped["malformed_stat"] += 1
            return None
        entry.stat = data
        if stat.ppid != entry.proc.ppid:  # re-parented: the same process, judged as before
            entry.proc = msgspec.structs.replace(entry.proc, ppid=stat.ppid)
        return entry.proc

    def _complete(self, pid: int, base: str, fd: int, data: bytes) -> RawProcess | None:
        """The full read of a process whose stat line is ``data`` (read first, so an exec
        racing this read shows as a changed stat line next round)."""
        stat = None if len(data) > STAT_MAX_BYTES else parse_stat(data)
        if stat is None:
            self._skipped["malformed_stat"] += 1
            self._release(fd)
            return None
        try:
            raw_cmdline, cut = read_bounded(base + "cmdline", self.cmdline_max_bytes)
        except OSError as err:
            self._skipped[skip_reason(err)] += 1
            self._release(fd)
            return None
        if cut:
            self._truncated["cmdline"] += 1
        cmdline = parse_cmdline(raw_cmdline)
        try:
            exe = os.stat(base + "exe")
            exe_dev, exe_ino = exe.st_dev, exe.st_ino
        except OSError:
            exe_dev = exe_ino = 0  # kernel threads and zombies have no executable
        ring1 = is_ring1(cmdline)
        env = self._gitpod_env(base) if ring1 else None
        proc = RawProcess(pid, stat.ppid, stat.starttime, stat.comm, cmdline, exe_dev, exe_ino, env)
        due = (
            0
            if ring1
            else self._reads + self._recheck_min + next(self._jitter, 0) % self._recheck_span
        )
        self._known[pid] = Known(fd, data, proc, due)
        return proc

    def _release(self, fd: int) -> None:
        if fd >= 0:
            os.close(fd)
            self._open_left += 1

    def _forget(self, pid: int) -> None:
        entry = self._known.pop(pid, None)
        if entry is not None:
            self._release(entry.fd)

    def _forget_all_but(self, present: set[int]) -> None:
        """Forget the processes not read this round (their memory and descriptors)."""
        for pid in [p for p in self._known if p not in present]:
            self._forget(pid)

    def _gitpod_env(self, base: str) -> dict[str, str] | None:
        try:
            raw, cut = read_bounded(base + "environ", self.environ_max_bytes)
        except OSError:
            return None  # "its environ can be read" is part of what makes a workspace
        if cut:
            self._truncated["environ"] += 1
        return parse_gitpod_env(raw, truncated=cut)


def _read_stat(path: str) -> bytes:
    fd = os.open(path, OPEN_FLAGS)
    try:
        return os.read(fd, _STAT_READ)
    finally:
        os.close(fd)


class ScanStage(Stage):
    """A source: reads its shard once per round. Rounds are numbered by wall-clock interval
    (``round_id = time // interval``), so separate shard processes agree on them without
    talking; the first round starts at once."""

    def __init__(self, reader: ShardReader, interval: float) -> None:
        self.reader = reader
        self.interval = interval
        self._last: int | None = None
        reader.set_recheck(max(1, int(RECHECK_SECONDS / interval)))

    def next_tick(self, now: float) -> float:
        current = int(now // self.interval)
        return now if current != self._last else (current + 1) * self.interval

    def tick(self, now: float) -> Sequence[Record]:
        self._last = int(now // self.interval)
        return [self.reader.read(self._last)]

    def close(self) -> None:
        self.reader.close()
