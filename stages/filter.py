"""The filter stage's logic: pass each user workload on only once (LRU)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from pipeline.catalog import CACHE_USE
from pipeline.meter import Meter
from pipeline.schema import Process

# D8: the process identity plus its executable. No ppid, so re-parenting (the parent died)
# is not a new process; the executable's device and inode, so an exec is.
SeenKey = tuple[int, int, int, int]


def seen_key(proc: Process) -> SeenKey:
    return (proc.pid, proc.starttime, proc.exe_dev, proc.exe_ino)


class SeenFilter:
    """An LRU of processes already handed on.

    D7: ``unseen`` does not remember anything; the caller marks a process seen once the next
    stage has accepted it, so one dropped under back-pressure is offered again next round.
    """

    def __init__(self, capacity: int, meter: Meter) -> None:
        if capacity < 1:
            raise ValueError("the LRU needs room for at least one process")
        self.capacity = capacity
        self.meter = meter
        self._seen: OrderedDict[SeenKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, proc: Process) -> bool:
        return seen_key(proc) in self._seen

    def unseen(self, procs: Iterable[Process]) -> list[Process]:
        """The processes not in the LRU; hits are refreshed, hits and misses counted."""
        fresh = []
        hits = 0
        for proc in procs:
            key = seen_key(proc)
            if key in self._seen:
                self._seen.move_to_end(key)
                hits += 1
            else:
                fresh.append(proc)
        if hits:
            self.meter.inc(CACHE_USE, hits, use="hit")
        if fresh:
            self.meter.inc(CACHE_USE, len(fresh), use="miss")
        return fresh

    def mark_seen(self, proc: Process) -> None:
        key = seen_key(proc)
        self._seen[key] = None
        self._seen.move_to_end(key)
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
