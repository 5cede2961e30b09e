"""The scan stage's logic: read one shard of a procfs root into raw process records."""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from collections.abc import Sequence

from pipeline.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from pipeline.meter import Meter
from pipeline.schema import RawProcess, Record, ShardScan
from pipeline.stage import Stage
from stages.procfs import (
    STAT_MAX_BYTES,
    parse_cmdline,
    parse_gitpod_env,
    parse_stat,
    read_bounded,
)

RING1_PREFIX = ("/proc/self/exe", "ring1")
PID_MAX = 2**22  # the kernel's PID_MAX_LIMIT; a larger "pid" is not a process

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
    ) -> None:
        self.proc_root = os.path.abspath(proc_root)
        self.meter = meter
        self.shard = shard
        self.shards = shards
        self.cmdline_max_bytes = cmdline_max_bytes
        self.environ_max_bytes = environ_max_bytes

    def read(self, round_id: int) -> ShardScan:
        started = time.time()
        skipped: Counter[str] = Counter()
        truncated: Counter[str] = Counter()
        try:
            pids = [p for p in list_pids(self.proc_root) if p % self.shards == self.shard]
        except OSError as err:
            # The root itself is unreadable: the round is empty and says why.
            pids = []
            skipped["root_" + skip_reason(err)] += 1
        procs = []
        for pid in pids:
            proc = self._read_one(pid, skipped, truncated)
            if proc is not None:
                procs.append(proc)
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

    def _read_one(
        self, pid: int, skipped: Counter[str], truncated: Counter[str]
    ) -> RawProcess | None:
        base = f"{self.proc_root}/{pid}/"
        try:
            raw_stat, stat_cut = read_bounded(base + "stat", STAT_MAX_BYTES)
            stat = None if stat_cut else parse_stat(raw_stat)
            if stat is None:
                skipped["malformed_stat"] += 1
                return None
            raw_cmdline, cut = read_bounded(base + "cmdline", self.cmdline_max_bytes)
        except OSError as err:
            skipped[skip_reason(err)] += 1
            return None
        if cut:
            truncated["cmdline"] += 1
        cmdline = parse_cmdline(raw_cmdline)
        exe_dev, exe_ino = self._exe_identity(base)
        env = self._gitpod_env(base, truncated) if is_ring1(cmdline) else None
        return RawProcess(pid, stat.ppid, stat.starttime, stat.comm, cmdline, exe_dev, exe_ino, env)

    @staticmethod
    def _exe_identity(base: str) -> tuple[int, int]:
        try:
            st = os.stat(base + "exe")
        except OSError:
            return 0, 0  # kernel threads and zombies have no executable
        return st.st_dev, st.st_ino

    def _gitpod_env(self, base: str, truncated: Counter[str]) -> dict[str, str] | None:
        try:
            raw, cut = read_bounded(base + "environ", self.environ_max_bytes)
        except OSError:
            return None  # "its environ can be read" is part of what makes a workspace
        if cut:
            truncated["environ"] += 1
        return parse_gitpod_env(raw, truncated=cut)


class ScanStage(Stage):
    """A source: reads its shard once per round. Rounds are numbered by wall-clock interval
    (``round_id = time // interval``), so separate shard processes agree on them without
    talking; the first round starts at once."""

    def __init__(self, reader: ShardReader, interval: float) -> None:
        self.reader = reader
        self.interval = interval
        self._last: int | None = None

    def next_tick(self, now: float) -> float:
        current = int(now // self.interval)
        return now if current != self._last else (current + 1) * self.interval

    def tick(self, now: float) -> Sequence[Record]:
        self._last = int(now // self.interval)
        return [self.reader.read(self._last)]
