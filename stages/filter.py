"""The filter stage's logic: pass each user workload on only once (LRU), and make sure each
one handed on is judged (at-least-once)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from pipeline.catalog import (
    CACHE_USE,
    FILTER_GAVE_UP,
    FILTER_INFLIGHT,
    FILTER_RETRIES,
    ROUND_COMPLETED,
    ROUND_DURATION,
    ROUNDS,
)
from pipeline.meter import Meter
from pipeline.schema import Judged, Process, Record, Workloads
from pipeline.stage import Stage

# D8: the process identity plus its executable. No ppid, so re-parenting (the parent died)
# is not a new process; the executable's device and inode, so an exec is.
SeenKey = tuple[int, int, int, int]


def seen_key(proc: Process) -> SeenKey:
    return (proc.pid, proc.starttime, proc.exe_dev, proc.exe_ino)


class SeenFilter:
    """An LRU of processes already judged, and the ones handed on awaiting their verdict.

    D7: ``unseen`` does not remember anything. The caller says what became of each process:
    ``mark_seen`` (judged, or handed on where nothing acknowledges), or ``handed_on`` then
    ``judged`` when the verdict comes back. A process dropped under back-pressure is simply
    not marked, so it is offered again next round.
    """

    def __init__(self, capacity: int, meter: Meter) -> None:
        if capacity < 1:
            raise ValueError("the LRU needs room for at least one process")
        self.capacity = capacity
        self.meter = meter
        self._seen: OrderedDict[SeenKey, None] = OrderedDict()
        self._inflight: dict[SeenKey, tuple[Process, float]] = {}
        self._timeouts: dict[SeenKey, int] = {}  # offers that got no verdict in time

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, proc: Process) -> bool:
        return seen_key(proc) in self._seen

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def unseen(self, procs: Iterable[Process]) -> list[Process]:
        """The processes neither judged nor awaiting a verdict; hits refresh the LRU.

        A process awaiting its verdict counts as a hit: it has been handed on.
        """
        fresh = []
        hits = 0
        for proc in procs:
            key = seen_key(proc)
            if key in self._seen:
                self._seen.move_to_end(key)
                hits += 1
            elif key in self._inflight:
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

    def handed_on(self, proc: Process, now: float) -> None:
        self._inflight[seen_key(proc)] = (proc, now)

    def judged(self, proc: Process) -> None:
        """Its verdict came back (perhaps after it was offered again): it is seen."""
        key = seen_key(proc)
        self._inflight.pop(key, None)
        self._timeouts.pop(key, None)
        self.mark_seen(proc)

    def expire(self, now: float, timeout: float, max_attempts: int) -> tuple[int, int]:
        """Release processes without a verdict after ``timeout`` so they are offered again;
        after ``max_attempts`` offers in all, give up and mark them seen.
        Returns (offered again, given up)."""
        retried = gave_up = 0
        for key, (proc, since) in list(self._inflight.items()):
            if now - since < timeout:
                continue
            del self._inflight[key]
            attempts = self._timeouts.get(key, 0) + 1
            if attempts >= max_attempts:
                self._timeouts.pop(key, None)
                self.mark_seen(proc)
                gave_up += 1
            else:
                self._timeouts[key] = attempts
                retried += 1
        return retried, gave_up

    def forget_absent(self, present: set[SeenKey]) -> None:
        """Drop retry counts of processes that are gone, so they cannot pile up."""
        for key in [k for k in self._timeouts if k not in present]:
            del self._timeouts[key]


class FilterStage(Stage):
    """Workloads in, new processes out (one record each, so match replicas share them);
    ``Judged`` verdicts from match come in on the same socket and complete the handover."""

    accepts = (Workloads, Judged)

    def __init__(
        self, seen: SeenFilter, meter: Meter, *, ack_timeout: float, max_attempts: int
    ) -> None:
        self.seen = seen
        self.meter = meter
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        if isinstance(record, Judged):
            self.seen.judged(record.process)
            self.meter.set(FILTER_INFLIGHT, self.seen.inflight)
            return ()
        assert isinstance(record, Workloads)  # noqa: S101 - the runner checks `accepts`
        retried, gave_up = self.seen.expire(now, self.ack_timeout, self.max_attempts)
        if retried:
            self.meter.inc(FILTER_RETRIES, retried)
        if gave_up:
            self.meter.inc(FILTER_GAVE_UP, gave_up)
        self.seen.forget_absent({seen_key(p) for p in record.procs})
        fresh = self.seen.unseen(record.procs)
        self.meter.inc(ROUNDS)
        self.meter.set(ROUND_COMPLETED, now)
        if record.started:
            self.meter.observe(ROUND_DURATION, max(0.0, now - record.started))
        return fresh

    def sent(self, record: Record, now: float) -> None:
        if isinstance(record, Process):
            self.seen.handed_on(record, now)
            self.meter.set(FILTER_INFLIGHT, self.seen.inflight)
